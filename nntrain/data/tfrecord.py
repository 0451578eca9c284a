"""TFRecord files of tf.train.Example: float_list `x` (a flattened example) and int64 `y` (its class)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np
import tensorflow as tf

from nntrain.errors import NntrainError


class RecordFiles(Mapping):
    """Split name -> number of records in the files `pattern` names for it, counted on first use.

    `{split}` in the pattern is replaced by the split name; a pattern without it serves every split.
    """

    def __init__(self, pattern: str, source: str):
        self._pattern = pattern
        self._source = source
        self._counts: dict[str, int] = {}

    def files(self, split: str) -> list[str]:
        """The files of one split; NntrainError when there are none."""
        pattern = self._pattern.replace("{split}", split)
        files = sorted(tf.io.gfile.glob(pattern))
        if not files:
            raise NntrainError(f"no TFRecord files match {pattern} (split '{split}' of data.source={self._source}): "
                               "check the pattern and the split name")
        return files

    def __getitem__(self, split: str) -> int:
        if split not in self._counts:
            files = self.files(split)
            try:
                self._counts[split] = int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))
            except tf.errors.OpError as e:
                raise NntrainError(f"TFRecord files {', '.join(files)} are unreadable ({e.message.splitlines()[0]}): "
                                   "rewrite them") from e
        return self._counts[split]

    def __iter__(self) -> Iterator[str]:
        return iter(self._counts)

    def __len__(self) -> int:
        return len(self._counts)

    def read(self, split: str, start: int, stop: int, input_shape: tuple[int, ...]) -> tf.data.Dataset:
        """Records `start` to `stop` of a split as `(x of input_shape, y)`, the first one checked eagerly."""
        features = {"x": tf.io.FixedLenFeature([int(np.prod(input_shape))], tf.float32),
                    "y": tf.io.FixedLenFeature([], tf.int64)}

        def parse(record: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            example = tf.io.parse_single_example(record, features)
            return tf.reshape(example["x"], input_shape), example["y"]

        records = tf.data.TFRecordDataset(self.files(split)).skip(start).take(stop - start)
        try:
            list(records.take(1).map(parse))
        except tf.errors.InvalidArgumentError as e:
            raise NntrainError(f"TFRecord files {self._pattern} (split '{split}') do not hold a float_list 'x' of "
                               f"{int(np.prod(input_shape))} values (data.input_shape={tuple(input_shape)}) and an "
                               "int64 'y': fix data.input_shape or the files") from e
        return records.map(parse, num_parallel_calls=tf.data.AUTOTUNE)
