"""keras-tuner's converter from its HyperParameters to TensorBoard HParams, which it keeps private
(`keras_tuner.src.engine.tuner_utils`, added by keras-team/keras-tuner#418 and used only for its own
per-trial HParams logging). nntrain writes the search's `hparams_config` with it, which keras-tuner never writes.

`tests/test_compat.py::test_keras_tuner_converts_hyperparameters_to_hparams` fails when keras-tuner moves it.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType

import keras_tuner
from keras_tuner.src.engine import tuner_utils


def to_hparams(space: keras_tuner.HyperParameters, hparams_api: ModuleType) -> Iterator:
    """The TensorBoard `HParam`s (with their domains) of every hyperparameter in `space`."""
    return tuner_utils.convert_hyperparams_to_hparams(space, hparams_api)
