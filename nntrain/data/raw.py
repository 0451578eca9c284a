"""Examples as stored, before preprocessing: what clients give a served or TFLite model."""

from __future__ import annotations

import dataclasses

import ml_collections
import tensorflow as tf

from nntrain.data import preprocess
from nntrain.data.sources import open_source


@dataclasses.dataclass(frozen=True)
class RawData:
    """A run's train and eval splits as stored, with the preprocessing its model was trained behind."""

    train: tf.data.Dataset  # (features, label) examples as stored, e.g. uint8 images or raw strings
    eval: tf.data.Dataset
    eval_examples: int
    preprocess: preprocess.Preprocess  # fitted on the train split, as for training
    class_names: tuple[str, ...] | None  # the source's class names; None where it has none

    @property
    def byte_level(self) -> bool:
        """Whether this is a `text:` source: packed byte tokens stored, raw text served."""
        return self.preprocess is preprocess.PACKED_TEXT


def load(data_config: ml_collections.ConfigDict, eval_examples: int | None = None) -> RawData:
    """The raw splits of `data_config` (train for calibration, eval for scoring: its first `eval_examples`, or all
    of it) and their preprocessing."""
    source = open_source(data_config)
    train = source.select(data_config.train_split)
    evaluation = source.select(data_config.eval_split)
    prep = preprocess.fit(train.dataset, data_config, source.num_classes)
    if eval_examples is None:
        return RawData(train.dataset, evaluation.dataset, evaluation.num_examples, prep, source.class_names)
    count = min(eval_examples, evaluation.num_examples or eval_examples)
    return RawData(train.dataset, evaluation.dataset.take(count), count, prep, source.class_names)

