"""What a finished run is used for: evaluate it, export it, load it back."""

from __future__ import annotations

import os
import shutil

import keras
import numpy as np
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import models, optim  # noqa: F401  register nntrain's layers, schedules and losses for load_model
from nntrain.callbacks import latest_checkpoint
from nntrain.errors import NntrainError
from nntrain.guards import check_export_dir
from nntrain.trainer import CHECKPOINTS as CHECKPOINTS_DIR
from nntrain.trainer import FINAL_MODEL

CHECKPOINTS = ("final", "best", "latest")


def load_model(model_dir: str, checkpoint: str = "final") -> keras.Model:
    """Loads a trained model from model_dir: `final`, `best` or `latest` (final falls back to latest)."""
    if checkpoint not in CHECKPOINTS:
        raise NntrainError(f"unknown checkpoint '{checkpoint}': use one of {', '.join(CHECKPOINTS)}")
    nn_config.load_saved(model_dir)  # a clear error when model_dir holds no run
    checkpoint_dir = os.path.join(model_dir, CHECKPOINTS_DIR)
    latest = latest_checkpoint(checkpoint_dir)
    candidates = {"final": [os.path.join(model_dir, FINAL_MODEL)], "best": [os.path.join(checkpoint_dir, "best.keras")],
                  "latest": []}[checkpoint]
    if checkpoint != "best" and latest:
        candidates.append(latest[0])
    for path in candidates:
        if os.path.isfile(path):
            return keras.models.load_model(path)
    raise NntrainError(f"'{model_dir}' has no {checkpoint} model yet: train it first "
                       "(`nntrain train --model_dir=...` resumes an interrupted run)")


def evaluate(model_dir: str, checkpoint: str = "final") -> dict:
    """Evaluates a trained model on its config's eval split; returns {metric: value}."""
    model = load_model(model_dir, checkpoint)
    config = nn_config.load_saved(model_dir)
    dataset, spec = nn_data.load_split(config.data, config.data.eval_split, config.train.batch_size)
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    return {"examples": spec.eval_examples, **{k: float(v) for k, v in results.items()}}


def export(model_dir: str, export_dir: str, checkpoint: str = "final") -> dict:
    """Writes `model.keras` and a SavedModel (`saved_model/`) into export_dir, checked by reloading.

    The export is built beside export_dir and renamed into place, so export_dir is either complete or absent.
    """
    check_export_dir(model_dir, export_dir)
    config = nn_config.load_saved(model_dir)
    model = load_model(model_dir, checkpoint)
    staging = f"{export_dir.rstrip('/')}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        model.save(os.path.join(staging, "model.keras"))
        model.export(os.path.join(staging, "saved_model"), format="tf_saved_model", verbose=False)
        sample = _sample_batch(config)
        max_diff = _max_prediction_difference(model, os.path.join(staging, "saved_model"), sample)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if os.path.exists(export_dir):
        os.rmdir(export_dir)
    os.replace(staging, export_dir)
    return {"export_dir": export_dir, "keras": os.path.join(export_dir, "model.keras"),
            "saved_model": os.path.join(export_dir, "saved_model"), "max_abs_difference": max_diff}


def _sample_batch(config) -> np.ndarray:
    dataset, _ = nn_data.load_split(config.data, config.data.eval_split, 8)
    features, _ = next(iter(dataset))
    return features.numpy()


def _max_prediction_difference(model: keras.Model, saved_model_dir: str, sample: np.ndarray) -> float:
    """Reloads the SavedModel and compares its predictions with the Keras model's."""
    reloaded = tf.saved_model.load(saved_model_dir)
    expected = model.predict(sample, verbose=0)
    actual = reloaded.serve(tf.constant(sample)).numpy()
    return float(np.max(np.abs(expected - actual)))
