"""Every shipped experiment builds and trains a few steps on its own source (TFDS sources on mock data), and
what it writes loads with plain Keras in a process that never imports nntrain."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

import nntrain
from nntrain import config as nn_config

# batch_size 4: xor's train split has 4 rows, and a batch larger than the train split is refused
TINY = {"train.epochs": 1, "train.steps_per_epoch": 2, "train.eval_steps": 1, "train.batch_size": 4,
        "data.shuffle_buffer": 16, "train.tensorboard": False, "data.sequence_length": 16, "data.vocab_size": 500}

# Loads every file given and predicts on zeros of the model's input shape; nntrain is never imported.
PLAIN_KERAS_LOAD = """
import sys
import keras
import numpy as np
for path in sys.argv[1:]:
    model = keras.saving.load_model(path)
    shape = (2,) + tuple(model.input_shape[1:])
    outputs = model.predict(np.zeros(shape, model.inputs[0].dtype), verbose=0)
    assert np.all(np.isfinite(outputs)), path
    print(path, outputs.shape)
assert not any(name.startswith("nntrain") for name in sys.modules)
"""


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """Each shipped experiment trained for one tiny epoch: name -> (final metrics, model_dir)."""
    runs = {}
    for experiment in nn_config.experiment_names():
        model_dir = tmp_path_factory.mktemp(experiment)
        config = nntrain.load_config(experiment, TINY)
        if config.data.source.startswith("tfds:"):
            with tfds.testing.mock_data(num_examples=32):
                metrics = nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
        else:
            metrics = nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
        runs[experiment] = metrics, model_dir
    return runs


@pytest.mark.parametrize("experiment", nn_config.experiment_names())
def test_experiment_trains_a_few_steps(experiment, trained):
    metrics, model_dir = trained[experiment]
    assert metrics["epoch"] == 1
    assert math.isfinite(metrics["loss"]) and math.isfinite(metrics["val_loss"])
    saved = json.loads((model_dir / "config.json").read_text())
    assert saved["experiment"] == experiment and saved["train"]["steps_per_epoch"] == 2
    assert (model_dir / "model.keras").is_file()


@pytest.mark.slow
def test_every_experiment_loads_with_plain_keras(trained, tmp_path):
    """model.keras, best.keras and the epoch checkpoint of every experiment: no nntrain class in any of them."""
    paths = []
    for _, model_dir in trained.values():
        checkpoints = sorted((model_dir / "checkpoints").glob("*.keras"))  # best.keras and the last epoch's
        assert len(checkpoints) >= 2, checkpoints
        paths += [model_dir / "model.keras", *checkpoints]
    env = {**os.environ, "PYTHONPATH": ""}  # the installed nntrain may not be importable either
    loaded = subprocess.run([sys.executable, "-c", PLAIN_KERAS_LOAD, *map(str, paths)], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=env)
    assert loaded.returncode == 0, loaded.stderr[-3000:]
    assert len(loaded.stdout.splitlines()) == len(paths)


@pytest.mark.fast
def test_every_experiment_documents_its_command():
    for name in nn_config.experiment_names():
        doc = (nn_config.EXPERIMENTS_DIR / f"{name}.py").read_text()
        assert f"nntrain train --experiment={name}" in doc, name
