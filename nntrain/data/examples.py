"""Examples a user gives a trained model (`nntrain predict --input=...`), read as its data source stores them."""

from __future__ import annotations

import csv

import numpy as np
import tensorflow as tf

from nntrain.data import images
from nntrain.errors import NntrainError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def read(path: str, stored: tf.TensorSpec, columns: list[str] | None) -> tuple[list[str], np.ndarray]:
    """(a name per example, the examples) of `path`: image files (a file or a folder of them), a CSV file's
    `columns` (the training CSV's feature columns, found by name; None: every column, in order), or a text
    file's non-empty lines."""
    if not tf.io.gfile.exists(path):
        raise NntrainError(f"--input={path}: no such file or folder")
    if tf.io.gfile.isdir(path):
        files = sorted(f for f in _walk(path) if f.lower().endswith(IMAGE_SUFFIXES))
        if not files:
            raise NntrainError(f"--input={path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return files, _images(files, stored)
    if path.lower().endswith(IMAGE_SUFFIXES):
        return [path], _images([path], stored)
    with tf.io.gfile.GFile(path, "rb") as f:
        text = f.read().decode("utf-8-sig", errors="replace")
    if path.lower().endswith(".csv"):
        return _csv(path, text, columns)
    if stored.dtype != tf.string:
        raise NntrainError(f"--input={path}: a text file, but this model takes {stored.dtype.name} examples of shape "
                           f"{tuple(stored.shape)}: give {'image files' if stored.dtype == tf.uint8 else 'a CSV'}")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise NntrainError(f"--input={path}: no text: give one example per line")
    return [f"{path}:{number}" for number in range(1, len(lines) + 1)], np.array(lines, dtype=object)


def _walk(folder: str) -> list[str]:
    return [tf.io.gfile.join(root, name) for root, _, names in tf.io.gfile.walk(folder) for name in names]


def _images(files: list[str], stored: tf.TensorSpec) -> np.ndarray:
    shape = tuple(stored.shape)
    if stored.dtype != tf.uint8 or len(shape) != 3:
        raise NntrainError(f"--input: image files, but this model takes {stored.dtype.name} examples of shape "
                           f"{shape}: give a CSV or text file")
    decode = images.decoder(shape)
    decoded = []
    for file in files:
        try:
            decoded.append(decode(tf.io.read_file(file)).numpy())
        except tf.errors.InvalidArgumentError as e:
            raise NntrainError(f"--input: {file} is not an image TensorFlow decodes ({e.message.splitlines()[0]})") \
                from e
    return np.stack(decoded)


def _csv(path: str, text: str, columns: list[str] | None) -> tuple[list[str], np.ndarray]:
    rows = list(csv.reader(text.splitlines()))
    if not rows:
        raise NntrainError(f"--input={path}: an empty file: give a header row and one row of features per example")
    header = [name.strip() for name in rows[0]]
    columns = columns or header  # a model not trained on a CSV: its features in the file's order
    missing = [name for name in columns if name not in header]
    if missing:
        raise NntrainError(f"--input={path}: no column {missing[0]!r}: the model takes the columns "
                           f"{', '.join(columns)} (in any order, by name)")
    keep = [header.index(name) for name in columns]
    names, features = [], []
    for number, row in enumerate(rows[1:], 2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            features.append([float(row[i]) for i in keep])
        except (ValueError, IndexError) as e:
            raise NntrainError(f"--input={path}, line {number}: every row needs a number in each of the columns "
                               f"{', '.join(columns)} ({e})") from e
        names.append(f"{path}:{number}")
    if not names:
        raise NntrainError(f"--input={path}: a header row and no rows of features")
    return names, np.array(features, dtype=np.float32)
