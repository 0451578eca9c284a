"""What a run produced, for notebooks and reports: its per-epoch history and its model's predictions."""

from __future__ import annotations

import dataclasses

import numpy as np

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import rundir
from nntrain.errors import NntrainError
from nntrain.exports import artifacts


@dataclasses.dataclass(frozen=True)
class Predictions:
    """`limit` examples of a split with the model's answers, in split order."""

    features: np.ndarray  # preprocessed inputs, e.g. (n, 28, 28, 1) float32 in [0, 1]
    labels: np.ndarray  # true labels
    outputs: np.ndarray  # the model's outputs (class probabilities for a classification head)
    predicted: np.ndarray  # class ids for classification and binary heads; the outputs for regression


def history(model_dir: str) -> list[dict]:
    """One dict per finished epoch (`epoch`, `loss`, `val_*`, ...), read from the run's metrics file."""
    path = rundir.join(model_dir, rundir.METRICS)
    if not rundir.exists(path):
        raise NntrainError(f"'{model_dir}' has no {rundir.METRICS}: train into it first "
                           "(`nntrain train --model_dir=...`)")
    return rundir.read_jsonl(path)


def predict(model_dir: str, split: str | None = None, limit: int = 16, checkpoint: str = "final") -> Predictions:
    """Runs a trained model on the first `limit` examples of `split` (default: the run's eval split)."""
    if limit <= 0:
        raise NntrainError(f"limit={limit} must be > 0")
    config = nn_config.load_saved(model_dir)
    model = artifacts.load_model(model_dir, checkpoint)
    dataset, _ = nn_data.load_split(config.data, split or config.data.eval_split, limit)
    features, labels = (tensor.numpy() for tensor in next(iter(dataset)))
    outputs = model.predict(features, verbose=0)
    if config.model.head == "classification":
        predicted = outputs.argmax(axis=-1)
    elif config.model.head == "binary":
        predicted = (outputs[..., 0] > 0.5).astype(np.int32)
    else:
        predicted = outputs
    return Predictions(features=features, labels=labels, outputs=outputs, predicted=predicted)
