"""Where examples come from: `data.source` opened as a Source that selects split specs."""

from __future__ import annotations

import dataclasses
import functools
import io
import os
import zipfile
from collections.abc import Callable, Mapping
from typing import Protocol

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain import registry
from nntrain.data import checks, csv_source, idx, splits
from nntrain.errors import NntrainError

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
GENERATED_SEEDS = {"train": 0, "test": 1}  # generated and synthetic data: a different draw per split
SYNTHETIC_POOL = 64  # synthetic examples drawn per split and repeated: cheap at any input_shape

Arrays = dict[str, tuple[np.ndarray, np.ndarray]]  # split -> (features, labels)


class Source(Protocol):
    name: str  # data.source, for messages
    num_classes: int | None  # None: targets are values, not classes
    class_names: tuple[str, ...] | None  # names of the classes where the data has them

    def select(self, spec: str) -> splits.Split:
        """The examples a split spec such as `train[:90%]` selects."""


@dataclasses.dataclass(frozen=True)
class IndexedSource:
    """A local source: the size of each named split and a reader of any index range of one."""

    name: str
    num_classes: int | None
    sizes: Mapping[str, int]
    read: Callable[[str, int, int], tf.data.Dataset]  # (split, start, stop) -> (features, label) examples
    cacheable: bool = True
    class_names: tuple[str, ...] | None = None
    arrays: Arrays | None = None  # what `read` slices, when the source holds its splits in memory

    def select(self, spec: str) -> splits.Split:
        parts = splits.ranges(spec, self.sizes, self.name)
        dataset = functools.reduce(tf.data.Dataset.concatenate, [self.read(*part) for part in parts])
        arrays = tuple((self.arrays[split][0][start:stop], self.arrays[split][1][start:stop])
                       for split, start, stop in parts) if self.arrays else ()
        return splits.Split(dataset, sum(stop - start for _, start, stop in parts), self.cacheable, arrays=arrays)


def open_source(data_config: ml_collections.ConfigDict) -> Source:
    """The Source `data.source=SCHEME:ARG` names: the opener registered as SCHEME (registry.SOURCES: the built-ins
    below and nntrain.register_source) called with ARG (`~` expanded); NntrainError for an unknown scheme."""
    source = data_config.source
    scheme, colon, arg = source.partition(":")
    opener = registry.SOURCES.find(scheme)
    if opener is None or (colon and not arg):
        raise NntrainError(f"unknown data.source '{source}': use SCHEME:ARG with a registered scheme "
                           f"({', '.join(registry.SOURCES.names())}), e.g. idx:DIR or tfds:mnist (or register one "
                           "with nntrain.register_source)")
    opened = opener(os.path.expanduser(arg), data_config)
    return opened if hasattr(opened, "select") else _in_memory(source, opened)


# The built-in sources, one line each; a class or a module slow to import is registered by its import path.
registry.SOURCES.add("tfds", "nntrain.data.tfds_source:TfdsSource")
registry.SOURCES.add("images", "nntrain.data.images:ImageFolderSource")
registry.SOURCES.add("text", "nntrain.data.text:TextSource")
registry.SOURCES.add("tfrecord", "nntrain.data.tfrecord:TFRecordSource")
# The in-memory ones below register with their decorator, as a user's source does.


def _in_memory(name: str, arrays: Arrays, class_names: tuple[str, ...] | None = None) -> IndexedSource:
    """Arrays as a source: uint8 (N, H, W) images gain a channel axis; integer labels are classes."""
    checks.check_lengths(name, arrays)
    arrays = {split: (x[..., None] if x.dtype == np.uint8 and x.ndim == 3 else x, y)
              for split, (x, y) in arrays.items()}
    labels = [y for _, y in arrays.values()]
    num_classes = None
    if all(np.issubdtype(y.dtype, np.integer) for y in labels):
        num_classes = max((int(y.max()) for y in labels if y.size), default=-1) + 1

    def read(split: str, start: int, stop: int) -> tf.data.Dataset:
        x, y = arrays[split]
        return tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop]))

    if class_names:
        num_classes = len(class_names)
    return IndexedSource(name, num_classes, {split: len(y) for split, (_, y) in arrays.items()}, read,
                         class_names=class_names, arrays=arrays)


@registry.register_source("csv")
def csv(path: str, data_config: ml_collections.ConfigDict) -> IndexedSource:
    """The CSV files of `path` (csv_source.py), class names from a text label column."""
    arrays, class_names = csv_source.load(path, data_config.label_column)
    return _in_memory(data_config.source, arrays, class_names)


@registry.register_source("idx")
def idx_files(directory: str, data_config: ml_collections.ConfigDict) -> Arrays:
    """MNIST-style IDX files in `directory` (idx.py)."""
    return idx.load(directory)


@registry.register_source("npz")
def npz(path: str, data_config: ml_collections.ConfigDict) -> Arrays:
    """`x_train, y_train, x_test, y_test` (the keras.datasets layout) as splits `train` and `test`, read through
    tf.io.gfile (a local file, gs://, ram://)."""
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise NntrainError(f"data.source=npz:{path}: no such file; point it at an .npz holding "
                           f"{', '.join(NPZ_KEYS)}")
    with tf.io.gfile.GFile(path, "rb") as f:
        archive = io.BytesIO(f.read())
    if not zipfile.is_zipfile(archive):
        raise NntrainError(f"{path} is not an .npz archive: write one with numpy.savez({', '.join(NPZ_KEYS)})")
    try:
        with np.load(archive) as data:
            missing = [key for key in NPZ_KEYS if key not in data.files]
            if missing:
                raise NntrainError(f"npz file {path} lacks {', '.join(missing)}: it needs {', '.join(NPZ_KEYS)}")
            return {split: (data[f"x_{split}"], data[f"y_{split}"]) for split in ("train", "test")}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise NntrainError(f"npz file {path} is unreadable ({e}): rewrite it with numpy.savez") from e


@registry.register_source("generated")
def generated(name: str, data_config: ml_collections.ConfigDict) -> Arrays:
    """generated:xor (the truth table) or generated:quadratic (y = x^2, data.num_examples per split)."""
    if name == "xor":
        return _xor()
    if name == "quadratic":
        return _quadratic(data_config.num_examples)
    raise NntrainError(f"unknown data.source 'generated:{name}': use generated:xor or generated:quadratic")


def _xor() -> Arrays:
    """The XOR truth table, the same four rows in both splits."""
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([[0], [1], [1], [0]], dtype=np.float32)
    return {split: (x, y) for split in GENERATED_SEEDS}


def _quadratic(num_examples: int) -> Arrays:
    """x ~ U[0, 1] and y = x^2, each of shape (1,), drawn with a fixed seed per split."""
    arrays = {}
    for split, seed in GENERATED_SEEDS.items():
        x = np.random.default_rng(seed).uniform(size=(num_examples, 1)).astype(np.float32)
        arrays[split] = (x, x ** 2)
    return arrays


@registry.register_source("synthetic")
def synthetic(arg: str, data_config: ml_collections.ConfigDict) -> IndexedSource:
    """Random float32 features in [0, 1) of data.input_shape and classes in [0, data.num_classes)."""
    if arg:
        raise NntrainError(f"data.source='synthetic:{arg}': synthetic takes no argument; set data.input_shape and "
                           "data.num_classes")
    shape = tuple(data_config.input_shape)

    def read(split: str, start: int, stop: int) -> tf.data.Dataset:
        rng = np.random.default_rng(GENERATED_SEEDS[split])
        pool = min(stop - start, SYNTHETIC_POOL)
        x = rng.uniform(size=(pool, *shape)).astype(np.float32)
        y = rng.integers(0, data_config.num_classes, size=pool, dtype=np.int32)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().take(stop - start)

    sizes = {split: data_config.num_examples for split in GENERATED_SEEDS}
    return IndexedSource("synthetic", data_config.num_classes, sizes, read, cacheable=False)
