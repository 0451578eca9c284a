"""Extension points used from a directory outside the repository: an experiment file's own get_model() and
get_callbacks(), nntrain.train(callbacks=...), and model builders and data sources registered by decorator."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import keras
import pytest

import nntrain
from nntrain.errors import NntrainError

OWN_MODEL = """
import keras

from nntrain.experiments.xor import get_config as xor_config


def get_config():
    config = xor_config()
    config.train.epochs = 2
    config.train.steps_per_epoch = 25
    config.model.width = 8
    return config


def get_model(config, spec):
    inputs = keras.Input(shape=spec.input_shape)
    hidden = keras.layers.Dense(config.model.width, activation="tanh", name="my_hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(1, activation="sigmoid", name="my_output")(hidden))


def get_callbacks(config):
    return [keras.callbacks.CSVLogger("epochs_seen_by_my_callback.csv")]


def get_search_space():
    from nntrain.tuning.search_space import choice

    return {"model.width": choice(4, 16)}
"""

PLUGINS = """
import numpy as np

import nntrain
from nntrain.config import base_config
from nntrain.models import heads


@nntrain.register_source("parity")
def parity(arg, data_config):
    bits = int(arg)
    x = np.array([[(i >> b) & 1 for b in range(bits)] for i in range(2 ** bits)], dtype=np.float32)
    y = (x.sum(axis=1, keepdims=True) % 2).astype(np.float32)
    return {"train": (x, y), "test": (x, y)}


@nntrain.register_model("wide_tanh")
def wide_tanh(inputs, model_config, spec):
    import keras

    x = keras.layers.Dense(model_config.width, activation="tanh", name="registered_hidden")(inputs)
    return heads.output(x, model_config, spec)


def get_config():
    config = base_config()
    config.data.source = "parity:3"
    config.model.name = "wide_tanh"
    config.model.head = "binary"
    config.model.width = 32
    config.optimizer.learning_rate = 0.05
    config.train.loss = "binary_crossentropy"
    config.train.batch_size = 8
    config.train.epochs = 3
    config.train.steps_per_epoch = 100
    config.train.tensorboard = False
    return config
"""


@pytest.fixture
def outside(tmp_path, monkeypatch) -> Path:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "own_model.py").write_text(OWN_MODEL)
    (tmp_path / "plugins.py").write_text(PLUGINS)
    return tmp_path


@pytest.mark.slow
def test_experiment_get_model_is_trained_exported_preflighted_and_tuned_with_its_callbacks(outside):
    config = nntrain.load_config("own_model.py")
    assert config.model.name == "own_model.get_model"
    metrics = nntrain.train(config, "run", strategy="cpu", verbose=0)
    assert metrics["epoch"] == 2
    trained = keras.saving.load_model("run/model.keras")
    nested = {inner.name for layer in trained.layers for inner in getattr(layer, "layers", [])}
    assert {"my_hidden", "my_output"} <= nested  # the experiment's own model, inside nntrain's Input
    assert len(Path("epochs_seen_by_my_callback.csv").read_text().splitlines()) == 1 + 2  # header + 2 epochs
    exported = nntrain.export("run", "exported")
    assert exported["artifacts"][1]["accuracy"] == exported["artifacts"][0]["accuracy"]  # serving = Keras
    report = nntrain.preflight(config, target="gpu")
    assert {check["check"] for check in report["checks"]} and report["ok"], report
    Path("epochs_seen_by_my_callback.csv").unlink()
    result = nntrain.tune("own_model.py", "sweep", {"train.epochs": 1}, strategy="cpu", tuner="grid", max_trials=2,
                          verbose=False)
    widths = sorted(trial["settings"]["model.width"] for trial in result["trials"])
    assert widths == [4, 16]
    assert Path("epochs_seen_by_my_callback.csv").is_file()  # trials run the experiment's callbacks too


def test_train_takes_extra_callbacks(outside):
    seen = []
    callback = keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: seen.append((epoch, logs["loss"])))
    nntrain.train(nntrain.load_config("xor", {"train.epochs": 2, "train.steps_per_epoch": 5}), "run",
                  strategy="cpu", verbose=0, callbacks=[callback])
    assert [epoch for epoch, _ in seen] == [0, 1]


@pytest.mark.slow
def test_registered_model_and_source_from_an_experiment_file_outside_the_repo(outside):
    """A fresh `nntrain` process run from the temp dir: the experiment file registers both by decorator."""
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", "--config=plugins.py", "--model_dir=run",
                             "--strategy=cpu", "--json"], capture_output=True, text=True, timeout=300, cwd=outside)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(result.stdout)["val_accuracy"] == 1.0  # 3-bit parity learned
    saved = json.loads(Path("run/config.json").read_text())
    assert saved["data"]["source"] == "parity:3" and saved["model"]["name"] == "wide_tanh"
    layers = {layer.name for layer in keras.saving.load_model("run/model.keras").layers}
    assert "registered_hidden" in layers


def test_unknown_names_point_at_registration(outside):
    with pytest.raises(NntrainError, match=r"unknown model config.model.name='wide_tahn': did you mean 'wide_tanh'"):
        nntrain.train(nntrain.load_config("plugins.py", {"model.name": "wide_tahn"}), "bad", strategy="cpu")
    with pytest.raises(NntrainError, match=r"registered scheme \(.*parity"):
        nntrain.train(nntrain.load_config("plugins.py", {"data.source": "parityy:3"}), "bad", strategy="cpu")
    assert not Path("bad").exists()


def test_a_registered_strategy_source_and_tuner_are_in_the_tables_the_cli_reads(tmp_path, capsys):
    """One table per kind: what nntrain.register_* adds, the command line lists, accepts and uses like a built-in."""
    import keras_tuner
    import numpy as np
    import tensorflow as tf

    from nntrain import cli

    made = []

    @nntrain.register_strategy("toy_cpu")
    def toy_cpu(tpu):
        made.append(tpu)
        return tf.distribute.OneDeviceStrategy("/cpu:0")

    @nntrain.register_source("toy_xor")
    def toy_xor(arg, data_config):
        x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]] * int(arg), dtype=np.float32)
        y = (x[:, :1] != x[:, 1:]).astype(np.float32)
        return {"train": (x, y), "test": (x, y)}

    @nntrain.register_tuner("toy_random")
    class ToyRandom(keras_tuner.RandomSearch):
        pass

    for command, names in (("train", ["toy_cpu", "mirrored"]), ("tune", ["toy_cpu", "toy_random", "hyperband"])):
        with pytest.raises(SystemExit):
            cli.run(["nntrain", command, "--help"])
        help_text = capsys.readouterr().out
        assert all(name in help_text for name in names), help_text
    run = ["--experiment=xor", "--config.data.source=toy_xor:2", "--config.train.epochs=1", "--strategy=toy_cpu"]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", *run, f"--model_dir={tmp_path / 'run'}", "--json"])
    assert exit_info.value.code in (0, None) and made == [""]
    assert json.loads(capsys.readouterr().out)["epoch"] == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "tune", *run, f"--model_dir={tmp_path / 'sweep'}", "--tuner=toy_random",
                 "--max_trials=1", "--json"])
    assert exit_info.value.code in (0, None) and len(made) == 2
    assert [trial["status"] for trial in json.loads(capsys.readouterr().out)["trials"]] == ["completed"]
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", *run[:-1], "--strategy=toy_cpus", f"--model_dir={tmp_path / 'bad'}"])
    assert exit_info.value.code == 2 and "did you mean 'toy_cpu'?" in capsys.readouterr().err
    with pytest.raises(NntrainError, match="toy_xor"):  # the unknown-source error lists the registered schemes
        nntrain.train(nntrain.load_config("xor", {"data.source": "toy_xr:2"}), str(tmp_path / "bad"), strategy="cpu")
    assert not (tmp_path / "bad").exists()
