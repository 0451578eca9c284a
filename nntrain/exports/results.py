"""What a run produced, for notebooks and reports: its per-epoch history and its model's predictions."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import rundir
from nntrain.data import csv_source, examples
from nntrain.data import raw as raw_data
from nntrain.errors import NntrainError
from nntrain.exports import artifacts


@dataclasses.dataclass(frozen=True)
class Predictions:
    """`limit` examples of a split with the model's answers, in split order."""

    features: np.ndarray  # preprocessed inputs, e.g. (n, 28, 28, 1) float32 in [0, 1]
    labels: np.ndarray | None  # true labels; None for examples given as an array
    outputs: np.ndarray  # the model's outputs (class probabilities for a classification head)
    predicted: np.ndarray  # class ids for classification and binary heads; the outputs for regression


def history(model_dir: str) -> list[dict]:
    """One dict per finished epoch (`epoch`, `loss`, `val_*`, ...), read from the run's metrics file."""
    path = rundir.join(model_dir, rundir.METRICS)
    if not rundir.exists(path):
        raise NntrainError(f"'{model_dir}' has no {rundir.METRICS}: train into it first "
                           "(`nntrain train --model_dir=...`)")
    return rundir.read_jsonl(path)


def predict(model_dir: str, split: str | np.ndarray | None = None, limit: int = 16,
            checkpoint: str = "final") -> Predictions:
    """Runs a trained model on the first `limit` examples of `split` (default: the run's eval split), or on
    examples given as an array, as the data source stores them (e.g. uint8 images (n, 28, 28, 1)): then
    `labels` is None."""
    config = nn_config.load_saved(model_dir)
    if split is None or isinstance(split, str):
        if limit <= 0:
            raise NntrainError(f"limit={limit} must be > 0")
        dataset, _ = nn_data.load_split(config.data, split or config.data.eval_split, limit)
        features, labels = (tensor.numpy() for tensor in next(iter(dataset)))
    else:
        features, labels = _model_inputs(np.asarray(split), raw_data.load(config.data)), None
    outputs = artifacts.load_model(model_dir, checkpoint).predict(features, verbose=0)
    return Predictions(features=features, labels=labels, outputs=outputs,
                       predicted=_predicted(outputs, config.model.head))


def predict_files(model_dir: str, path: str, checkpoint: str = "final") -> list[dict]:
    """`nntrain predict`: one answer per example of `path` (image files or a folder of them, a CSV file with the
    training CSV's feature columns (by name), or a text file of one example per line): `input` (the file, or the row or
    line number), then `class_index`, `class_name` (None where the data names no classes) and `probability` of
    that class, or `outputs` for a regression model."""
    config = nn_config.load_saved(model_dir)
    raw = raw_data.load(config.data)
    kind, _, source_path = config.data.source.partition(":")
    columns = csv_source.feature_columns(source_path, config.data.label_column) if kind == "csv" else None
    names, features = examples.read(path, raw.train.element_spec[0], columns)
    outputs = artifacts.load_model(model_dir, checkpoint).predict(_model_inputs(features, raw), verbose=0)
    return [{"input": name, **_answer(output, config.model.head, raw.class_names)}
            for name, output in zip(names, outputs)]


def _model_inputs(features: np.ndarray, raw: raw_data.RawData) -> np.ndarray:
    """Examples as the source stores them -> the model's inputs (the preprocessing its training used)."""
    if raw.byte_level:
        raise NntrainError("this run is a byte-level language model: it continues text, use `nntrain generate` "
                           "instead")
    stored = raw.train.element_spec[0]
    if features.shape[1:] != tuple(stored.shape):
        raise NntrainError(f"examples of shape {features.shape[1:]}: this model takes a batch of "
                           f"{tuple(stored.shape)} examples (shape (n, {', '.join(map(str, stored.shape))}))")
    if stored.dtype == tf.uint8 and features.dtype != np.uint8:
        raise NntrainError(f"examples of dtype {features.dtype}: this model takes uint8 images (0-255) as its data "
                           "stores them; pass array.astype(np.uint8) of unscaled pixels")
    if (stored.dtype == tf.string) != (features.dtype.kind in "USO"):
        raise NntrainError(f"examples of dtype {features.dtype}: this model takes {stored.dtype.name} examples")
    return raw.preprocess.to_inputs(tf.constant(features)).numpy()


def _predicted(outputs: np.ndarray, head: str) -> np.ndarray:
    if head == "classification":
        return outputs.argmax(axis=-1)
    if head == "binary":
        return (outputs[..., 0] > 0.5).astype(np.int32)
    return outputs


def _answer(output: np.ndarray, head: str, class_names: tuple[str, ...] | None) -> dict:
    """One example's answer as JSON-ready values."""
    if head == "regression":
        return {"outputs": output.tolist()}
    index = int(_predicted(output[None], head)[0])
    probability = float(output[index] if head == "classification" else (output[0] if index else 1 - output[0]))
    name = class_names[index] if class_names and index < len(class_names) else None
    return {"class_index": index, "class_name": name, "probability": probability}
