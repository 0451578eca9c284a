"""Image folders (`images:DIR`): one subfolder per class, optionally inside one subfolder per split.

    DIR/CLASS/*.png            -> split `train`, shuffled once with a fixed seed (so slices are class-balanced)
    DIR/SPLIT/CLASS/*.jpg      -> one split per SPLIT folder, each shuffled once with the same seed

Files are decoded and resized in tf.data (`decode`); each file's header is checked when the folder is listed,
so a corrupt file is reported by name before anything is trained or written.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain.data import preprocess, splits
from nntrain.errors import NntrainError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")  # what keras.utils.image_dataset_from_directory reads
LIST_SEED = 0  # the fixed shuffle of every split's file list
DECODE_BATCH = 256  # files read and decoded per tf.data element (batch_decoder)
# The leading bytes of each format tf.io.decode_image reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF87a", b"GIF89a")


@dataclasses.dataclass(frozen=True)
class Folder:
    """An image folder listed: per split, file paths and their class indices, in the fixed shuffled order."""

    root: str
    class_names: tuple[str, ...]
    files: dict[str, tuple[list[str], np.ndarray]]  # split -> (paths, labels)


def list_folder(root: str) -> Folder:
    """Lists `root` (split folders of class folders, or class folders); NntrainError for an empty or bad folder."""
    if not tf.io.gfile.isdir(root):
        raise NntrainError(f"data.source=images:{root}: no such directory; point it at a folder of class "
                           "folders (DIR/CLASS/*.jpg) or of split folders (DIR/train/CLASS/*.jpg)")
    subdirs = _subdirs(root)
    if not subdirs:
        raise NntrainError(f"data.source=images:{root} holds no class folders: put each class's images in "
                           "DIR/CLASS/ (or DIR/SPLIT/CLASS/)")
    split_layout = all(_subdirs(os.path.join(root, d)) and not _images(os.path.join(root, d)) for d in subdirs)
    layout = {d: os.path.join(root, d) for d in subdirs} if split_layout else {"train": root}
    per_split = {split: {name: _images(os.path.join(path, name)) for name in _subdirs(path)}
                 for split, path in layout.items()}
    for split, classes in per_split.items():
        for name, paths in classes.items():
            if not paths:
                folder = os.path.join(layout[split], name)
                raise NntrainError(f"class folder {folder} holds no images ({' '.join(EXTENSIONS)}): "
                                   "add images or remove the folder")
    class_names = tuple(sorted({name for classes in per_split.values() for name in classes}))
    index = {name: i for i, name in enumerate(class_names)}
    files = {}
    for split, classes in per_split.items():
        paths = [path for name in sorted(classes) for path in classes[name]]
        labels = np.array([index[name] for name in sorted(classes) for _ in classes[name]], dtype=np.int64)
        order = np.random.default_rng(LIST_SEED).permutation(len(paths))
        files[split] = ([paths[i] for i in order], labels[order])
    for paths, _ in files.values():
        for path in paths:
            _check_header(path)
    return Folder(root, class_names, files)


def _subdirs(path: str) -> list[str]:
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path)
                  if tf.io.gfile.isdir(os.path.join(path, name)))


def _images(path: str) -> list[str]:
    return sorted(os.path.join(path, name) for name in tf.io.gfile.listdir(path)
                  if name.lower().endswith(EXTENSIONS))


def _check_header(path: str) -> None:
    with tf.io.gfile.GFile(path, "rb") as f:
        head = f.read(8)
    if not head.startswith(_MAGIC):
        raise NntrainError(f"image file {path} is not a JPEG, PNG, BMP or GIF image (corrupt or mislabelled): "
                           "replace or delete it")


def image_shape(first_file: str, data_config: ml_collections.ConfigDict) -> tuple[int, int, int]:
    """(height, width, channels) every image is decoded to: data.image_size and data.channels, else the first file's."""
    height_width = tuple(data_config.image_size)
    channels = data_config.channels
    if not height_width or not channels:
        try:
            first = tf.io.decode_image(tf.io.read_file(first_file), expand_animations=False)
        except tf.errors.InvalidArgumentError as e:
            raise NntrainError(f"image file {first_file} cannot be decoded ({e.message.splitlines()[0]}): "
                               "replace or delete it") from e
        height_width = height_width or tuple(int(d) for d in first.shape[:2])
        channels = channels or int(first.shape[2])
    return (*height_width, channels)


def decoder(shape: tuple[int, int, int]) -> Callable[[tf.Tensor], tf.Tensor]:
    """Encoded image bytes -> uint8 image of `shape`, resized bilinearly as Keras does (the identity for images
    of that size already; resizing every image costs less than a tf.cond choosing when to: benchmarks/)."""

    @tf.autograph.experimental.do_not_convert
    def decode(encoded: tf.Tensor) -> tf.Tensor:
        return preprocess.resize(tf.io.decode_image(encoded, channels=shape[2], expand_animations=False), shape)

    return decode


def batch_decoder(shape: tuple[int, int, int], from_files: bool = False) -> Callable[[tf.Tensor], tf.Tensor]:
    """A vector of encoded images (or of their file paths) -> uint8 batch of `shape`, each read, decoded and
    resized by `decoder` inside one tf.map_fn: one tf.data function call per batch, not per image, which is most
    of what a small image costs (docs/benchmarks.md)."""
    decode = decoder(shape)
    one = (lambda path: decode(tf.io.read_file(path))) if from_files else decode

    @tf.autograph.experimental.do_not_convert
    def decode_batch(encoded: tf.Tensor) -> tf.Tensor:
        return tf.map_fn(one, encoded, fn_output_signature=tf.TensorSpec(shape, tf.uint8))

    return decode_batch


class ImageFolderSource:
    """`images:DIR` as a source of `(uint8 image, int64 class)` examples, with TFDS split slicing."""

    def __init__(self, root: str, data_config: ml_collections.ConfigDict):
        self.name = f"images:{root}"
        self.folder = list_folder(root)
        self.class_names = self.folder.class_names
        self.num_classes = len(self.class_names)
        first_split = "train" if "train" in self.folder.files else next(iter(self.folder.files))
        self.shape = image_shape(self.folder.files[first_split][0][0], data_config)
        self._decode = batch_decoder(self.shape, from_files=True)

    def select(self, spec: str) -> splits.Split:
        paths, labels = self._entries(spec)
        return splits.Split(self._read(paths, labels, 1, 0, None), len(paths), files=tuple(paths),
                            shard=lambda n, i, seed: self._read(paths, labels, n, i, seed))

    def records(self, spec: str) -> tf.data.Dataset:
        """`(encoded bytes, class)` of a split spec, undecoded (what `nntrain convert` writes)."""
        paths, labels = self._entries(spec)
        return tf.data.Dataset.from_tensor_slices((paths, labels)).map(
            lambda path, label: (tf.io.read_file(path), label), num_parallel_calls=tf.data.AUTOTUNE)

    def _entries(self, spec: str) -> tuple[list[str], np.ndarray]:
        """The paths and classes a split spec selects, in the fixed shuffled order."""
        files = self.folder.files
        parts = splits.ranges(spec, {split: len(paths) for split, (paths, _) in files.items()}, self.name)
        paths = [path for split, start, stop in parts for path in files[split][0][start:stop]]
        labels = np.concatenate([files[split][1][start:stop] for split, start, stop in parts])
        return paths, labels

    def _read(self, paths: list[str], labels: np.ndarray, num_shards: int, index: int,
              seed: int | None) -> tf.data.Dataset:
        entries = tf.data.Dataset.from_tensor_slices((paths, labels)).shard(num_shards, index)
        if seed is not None:
            entries = entries.shuffle(len(paths) // num_shards + 1, seed=seed, reshuffle_each_iteration=False)
        decode, count = self._decode, entries.cardinality()
        examples = entries.batch(DECODE_BATCH).map(lambda batch, labels: (decode(batch), labels),
                                                   num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        return examples.apply(tf.data.experimental.assert_cardinality(count))
