"""Data checks on a first pass over every split (its arrays, where it is held in memory), before a run writes anything.

Each problem is one NntrainError naming the source, the split and the fix: x and y of different lengths, dtypes
the pipeline cannot turn into inputs and targets, labels outside [0, num_classes), non-finite values (how many
and the first example), and a batch larger than the train split. A NaN pixel would otherwise make NaN weights
while the loss stays finite (ReLU maps NaN to 0), so the NaN-loss guard would never fire.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain.data.splits import Split
from nntrain.errors import NntrainError, op_message

CHECK_BATCH_ELEMENTS = 2**22  # numbers per batch read by the check: ~16 MB of float32 at any example size
GENERATED = ("synthetic", "generated:")  # nntrain draws these itself, valid by construction: values not read


def check_lengths(source: str, arrays: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> None:
    """Features and labels of each split of an in-memory source have one row per example."""
    for split, (x, y) in arrays.items():
        if len(x) != len(y):
            raise NntrainError(f"data.source={source}: split '{split}' has {len(x)} rows of x but {len(y)} labels "
                               f"in y: write x_{split} and y_{split} with one row per example")


def check_splits(data_config: ml_collections.ConfigDict, source: str, num_classes: int | None, train: Split,
                 evaluation: Split | None, global_batch_size: int) -> None:
    """No split of no examples, the batch against the train split; then, unless data.check is off, one pass over
    each split for dtypes, label range and finiteness (and readable files)."""
    for spec, split in ((data_config.train_split, train), (data_config.eval_split, evaluation)):
        if split is not None and split.num_examples == 0:
            raise _no_examples(f"split '{spec}' of data.source={source}")
        if split is not None and 0 in split.dataset.element_spec[0].shape:
            raise NntrainError(f"split '{spec}' of data.source={source}: examples of shape "
                               f"{tuple(split.dataset.element_spec[0].shape)} hold no features: give each example "
                               "at least one feature")
    if train.num_examples is not None and global_batch_size > train.num_examples:  # None: not counted
        raise NntrainError(f"train.batch_size={global_batch_size} is larger than the train split "
                           f"'{data_config.train_split}' ({train.num_examples} examples): use "
                           f"--config.train.batch_size={_largest_power_of_two(train.num_examples)} or less, "
                           "or a larger split")
    if not data_config.check or source.startswith(GENERATED):
        return
    for spec, split in ((data_config.train_split, train), (data_config.eval_split, evaluation)):
        if split is not None:
            where = f"split '{spec}' of data.source={source}"
            _check_dtypes(split.dataset.element_spec, where)
            _check_values(split, where, num_classes)


def _largest_power_of_two(n: int) -> int:
    return 1 << (max(n, 1).bit_length() - 1)


def _check_dtypes(element_spec: tuple, where: str) -> None:
    features, labels = element_spec
    if not (features.dtype.is_floating or features.dtype.is_integer or features.dtype in (tf.bool, tf.string)):
        raise NntrainError(f"{where}: features of dtype {features.dtype.name} cannot be model inputs: "
                           "store numbers (or strings for text)")
    if not (labels.dtype.is_floating or labels.dtype.is_integer or labels.dtype == tf.bool):
        raise NntrainError(f"{where}: labels of dtype {labels.dtype.name} are not numbers: store class "
                           "indices as integers, or regression targets as floats")


def _check_values(split: Split, where: str, num_classes: int | None) -> None:
    """One pass over the split in batches of ~CHECK_BATCH_ELEMENTS numbers: its arrays where it is held in memory
    (mnist_mlp's check took 0.04 s of CPU through tf.data, a fresh process's first pass), else through tf.data."""
    dataset = split.dataset
    features_spec, labels_spec = dataset.element_spec
    per_example = features_spec.shape.num_elements()  # None for examples of varying shape: read one at a time
    batch = max(1, CHECK_BATCH_ELEMENTS // per_example) if per_example else 1
    check_features = features_spec.dtype.is_floating
    check_labels = labels_spec.dtype.is_floating or (labels_spec.dtype.is_integer and num_classes is not None)
    if not (check_features or check_labels):
        return
    bad_features, bad_labels = _Count(), _Count()
    offset = 0
    try:
        for x, y in _batches(split, batch):
            if check_features:
                bad_features.add((~np.isfinite(x)).reshape(len(x), -1).any(axis=1), offset)
            if labels_spec.dtype.is_floating:
                bad_labels.add((~np.isfinite(y)).reshape(len(y), -1).any(axis=1), offset, y)
            elif check_labels:
                bad_labels.add(((y < 0) | (y >= num_classes)).reshape(len(y), -1).any(axis=1), offset, y)
            offset += len(x)
    except tf.errors.OpError as e:  # a missing, truncated or miscounted file
        raise NntrainError(f"{where} is unreadable ({op_message(e)}{_first_bad_file(split)}): repair or rewrite "
                           "its files (for tfrecord:DIR, write them again with `nntrain convert`)") from e
    if not offset:
        raise _no_examples(where)
    if bad_features.count:
        raise NntrainError(f"{where}: {bad_features.count} example(s) have NaN or infinite features, the first at "
                           f"index {bad_features.first}: remove or repair them (e.g. numpy.nan_to_num) before training")
    if bad_labels.count and labels_spec.dtype.is_floating:
        raise NntrainError(f"{where}: {bad_labels.count} example(s) have NaN or infinite labels, the first at "
                           f"index {bad_labels.first}: remove or repair them before training")
    if bad_labels.count:
        raise NntrainError(f"{where}: {bad_labels.count} label(s) outside 0..{num_classes - 1}, the first "
                           f"{bad_labels.first_value} at index {bad_labels.first}: labels are class indices; fix them, "
                           "or data.num_classes for sources that take it")


def _batches(split: Split, batch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The split's examples in order, `batch` at a time (the last batch of each array slice may be shorter)."""
    if not split.arrays:
        yield from split.dataset.batch(batch).as_numpy_iterator()
        return
    for x, y in split.arrays:
        for start in range(0, len(x), batch):
            yield x[start:start + batch], y[start:start + batch]


def _first_bad_file(split: Split) -> str:
    """`, in FILE`: the first file that fails to read alone, where each file is one example (image folders, whose
    files are decoded in blocks); else ''."""
    if split.shard is None or len(split.files) != split.num_examples:
        return ""
    for index, path in enumerate(split.files):
        try:
            for _ in split.shard(len(split.files), index, None):
                pass
        except tf.errors.OpError:
            return f", in {path}"
    return ""


def _no_examples(where: str) -> NntrainError:
    return NntrainError(f"{where} holds no examples: check the split spec and that its files are not empty")


class _Count:
    """How many examples of a split are bad, and the first one."""

    def __init__(self) -> None:
        self.count = 0
        self.first: int | None = None
        self.first_value: object = None

    def add(self, bad: np.ndarray, offset: int, values: np.ndarray | None = None) -> None:
        hits = np.flatnonzero(bad)
        if hits.size and self.first is None:
            self.first = offset + int(hits[0])
            if values is not None:
                self.first_value = np.asarray(values[hits[0]]).ravel()[0].item()
        self.count += int(hits.size)
