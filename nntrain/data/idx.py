"""MNIST-style IDX files (`train-images-idx3-ubyte[.gz]`, `t10k-labels-idx1-ubyte[.gz]`, ...) as numpy arrays,
read through `tf.io.gfile` (a local folder, gs://, ram://)."""

from __future__ import annotations

import gzip
import zlib

import numpy as np
import tensorflow as tf

from nntrain.errors import NntrainError

# split -> (images file, labels file), each optionally gzipped
FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_UINT8 = 0x08  # the IDX type code of unsigned bytes, the only one MNIST-style files use


def read(path: str, ndim: int) -> np.ndarray:
    """Parses one uint8 IDX file with `ndim` dimensions; a corrupt file raises NntrainError naming it."""
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except (tf.errors.OpError, OSError, EOFError, zlib.error) as e:
        raise NntrainError(f"IDX file {path} is unreadable ({e}): re-download it") from e
    magic = bytes([0, 0, _UINT8, ndim])
    if data[:4] != magic:
        raise NntrainError(f"IDX file {path} has magic number {data[:4].hex() or 'none'}, expected "
                           f"{magic.hex()} (uint8, {ndim} dimensions): it is corrupt or not this kind of file")
    header = 4 + 4 * ndim
    # A header cut short is padded with zero sizes, so the byte count below cannot match.
    shape = tuple(int(d) for d in np.frombuffer(data[4:header].ljust(header - 4, b"\0"), dtype=">u4"))
    expected = header + int(np.prod(shape))
    if len(data) != expected:
        raise NntrainError(f"IDX file {path} is truncated or corrupt: {len(data)} bytes, expected {expected} "
                           f"for shape {shape}: re-download it")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def _find(directory: str, name: str) -> str | None:
    for candidate in (name, name + ".gz"):
        path = tf.io.gfile.join(directory, candidate)
        if tf.io.gfile.exists(path) and not tf.io.gfile.isdir(path):
            return path
    return None


def load(directory: str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """`{split: (images (N, H, W), labels (N,))}` for each split whose files are in `directory`."""
    if not tf.io.gfile.isdir(directory):
        raise NntrainError(f"data.source=idx:{directory}: no such directory; point it at a folder holding "
                           f"{FILES['train'][0]}[.gz] and friends")
    arrays = {}
    for split, (images_name, labels_name) in FILES.items():
        images_path, labels_path = _find(directory, images_name), _find(directory, labels_name)
        if images_path is None and labels_path is None:
            continue
        if images_path is None or labels_path is None:
            missing = images_name if images_path is None else labels_name
            raise NntrainError(f"data.source=idx:{directory}: {missing}[.gz] is missing for split '{split}'")
        images, labels = read(images_path, ndim=3), read(labels_path, ndim=1)
        if len(images) != len(labels):
            raise NntrainError(f"IDX files {images_path} and {labels_path} disagree: {len(images)} images, "
                               f"{len(labels)} labels")
        arrays[split] = (images, labels)
    if not arrays:
        raise NntrainError(f"data.source=idx:{directory}: no IDX files there; expected "
                           f"{', '.join(name + '[.gz]' for names in FILES.values() for name in names)}")
    return arrays
