"""Every shipped experiment builds and trains a few steps on its own source (TFDS sources on mock data)."""

from __future__ import annotations

import json
import math

import pytest
import tensorflow_datasets as tfds

import nntrain
from nntrain import config as nn_config

# batch_size 4: xor's train split has 4 rows, and a batch larger than the train split is refused
TINY = {"train.epochs": 1, "train.steps_per_epoch": 2, "train.eval_steps": 1, "train.batch_size": 4,
        "data.shuffle_buffer": 16, "train.tensorboard": False}


@pytest.mark.parametrize("experiment", nn_config.experiment_names())
def test_experiment_trains_a_few_steps(experiment, tmp_path):
    config = nntrain.load_config(experiment, TINY)
    if config.data.source.startswith("tfds:"):
        with tfds.testing.mock_data(num_examples=32):
            metrics = nntrain.train(config, str(tmp_path), strategy="cpu", verbose=0)
    else:
        metrics = nntrain.train(config, str(tmp_path), strategy="cpu", verbose=0)
    assert metrics["epoch"] == 1
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["val_loss"])
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["experiment"] == experiment and saved["train"]["steps_per_epoch"] == 2
    assert (tmp_path / "model.keras").is_file()


def test_every_experiment_documents_its_command():
    for name in nn_config.experiment_names():
        doc = (nn_config.EXPERIMENTS_DIR / f"{name}.py").read_text()
        assert f"nntrain train --experiment={name}" in doc, name
