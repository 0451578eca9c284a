"""End-to-end training: target metrics, resume, NaN handling, evaluate/export, strategies."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import snapshot
from keras.src.saving import saving_lib

import nntrain
from nntrain.compat import keras_saving, keras_tensorboard
from nntrain.distribute import execution, strategies
from nntrain.exports import artifacts
from nntrain.run.trainer import TrainingDiverged

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
MNIST_LOCAL = [f"--config.data.source=idx:{MNIST_DIR}", "--config.data.train_split=test[:8000]",
               "--config.data.eval_split=test[8000:]"]


def _metrics_lines(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines() if line]


def _nntrain(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nntrain.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


@pytest.mark.fast
def test_xor_reaches_full_accuracy(tmp_path):
    metrics = nntrain.train("xor", str(tmp_path / "xor"), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] == 1.0
    assert metrics["epoch"] == 5


def test_quadratic_reaches_small_heldout_mse(tmp_path):
    nntrain.train("quadratic", str(tmp_path / "quadratic"), strategy="cpu", verbose=0)
    result = nntrain.evaluate(str(tmp_path / "quadratic"))
    # Seeds 0, 1, 2 end at 2.1e-4, 1.2e-4, 1.0e-4 (on main before the resumable stream: 2.7e-6, 2.5e-4, 1.6e-4).
    assert result["loss"] <= 3e-4, result


@pytest.mark.slow
def test_mnist_mlp_cli_on_real_mnist(tmp_path):
    """The README's main job: mnist_mlp on 8,000 real MNIST digits, >= 96% on the other 2,000."""
    model_dir = tmp_path / "mnist"
    trained = _nntrain("train", "--experiment=mnist_mlp", f"--model_dir={model_dir}", *MNIST_LOCAL)
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert "global batch 128 = 128 per replica x 1 replica(s)" in trained.stderr
    evaluated = _nntrain("evaluate", f"--model_dir={model_dir}", "--json")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads(evaluated.stdout)
    assert result["examples"] == 2000
    assert result["accuracy"] >= 0.96, result
    lines = _metrics_lines(model_dir)
    assert abs(result["accuracy"] - lines[-1]["val_accuracy"]) < 1e-6
    wall_times = [line["wall_time"] for line in lines]
    assert wall_times == sorted(wall_times) and time.time() - 600 < wall_times[0] <= time.time()


def test_keras_attribute_skipsets_are_computed_once():
    """Every checkpoint save walks the model with these sets; Keras 3.15 recomputes them (~17 ms) each time."""
    keras_saving.patch()
    assert saving_lib.get_attr_skipset("Layer") is saving_lib.get_attr_skipset("Layer")
    assert "variables" not in saving_lib.get_attr_skipset("Optimizer")


@pytest.mark.fast
@pytest.mark.parametrize("tensorboard", [keras_tensorboard.TensorBoard, keras.callbacks.TensorBoard])
def test_tensorboard_records_no_batch_scalars_per_epoch(tmp_path, monkeypatch, tensorboard):
    """With update_freq="epoch" no writer takes batch scalars: nntrain's TensorBoard makes no summary call for
    them, Keras's makes one per value (when it stops, delete compat/keras_tensorboard.py). The epoch's still go."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    callback = tensorboard(str(tmp_path), write_graph=False)
    callback.set_model(model)
    calls = []
    scalar = callback.summary.scalar
    monkeypatch.setattr(callback.summary, "scalar", lambda name, *a, **k: calls.append(name) or scalar(name, *a, **k))
    callback.on_train_begin()
    callback.on_train_batch_begin(0)
    callback.on_train_batch_end(0, {"loss": 0.5})
    assert calls == ([] if tensorboard is keras_tensorboard.TensorBoard else ["batch_loss"])
    callback.on_epoch_end(0, {"loss": 0.5})
    assert "epoch_loss" in calls


@pytest.mark.slow
def test_killed_run_resumes_where_it_stopped(tmp_path):
    model_dir = tmp_path / "resumed"
    args = [sys.executable, "-m", "nntrain.cli", "train", "--experiment=quadratic", f"--model_dir={model_dir}",
            "--config.train.epochs=12", "--strategy=cpu"]
    process = subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    metrics_path = model_dir / "metrics.jsonl"
    while time.time() < deadline and process.poll() is None:
        if metrics_path.exists() and len(metrics_path.read_text().splitlines()) >= 3:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    done_before = len(_metrics_lines(model_dir))
    assert 3 <= done_before < 12, "the run was not stopped mid-way"

    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    state = json.loads((model_dir / "checkpoints" / "state.json").read_text())
    resumed = again.stderr.split(f"resuming from the checkpoint in {model_dir}/checkpoints: step ")[1]
    resumed_at = int(resumed.split("(")[1].split(" of")[0])
    assert resumed_at >= done_before - 1  # the kill may land between the metrics line and the backup
    epochs = [m["epoch"] for m in _metrics_lines(model_dir)]
    assert epochs == list(range(1, 13)), epochs
    assert state["epoch"] == 12


@pytest.mark.fast
def test_nan_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    model_dir = str(tmp_path / "nan")
    nntrain.train(nntrain.load_config("quadratic", {"train.epochs": 2}), model_dir, strategy="cpu", verbose=0)
    kept, final = Path(model_dir, "checkpoints", "step-64"), Path(model_dir, "model.keras")
    good_bytes, final_bytes = snapshot(kept), final.read_bytes()
    config = nntrain.load_config("quadratic", {"train.epochs": 4, "optimizer.learning_rate": 1e30})
    with pytest.raises(TrainingDiverged) as error:
        nntrain.train(config, model_dir, strategy="cpu", verbose=0)
    message = str(error.value)
    where = re.search(r"NaN/inf (at step (\d+)|within steps (\d+)-(\d+));", message)
    first, last = (where[2], where[2]) if where[2] else (where[3], where[4])
    assert 2 * 32 < int(first) <= int(last) <= 3 * 32  # in epoch 3, the first epoch after the resume
    assert "last finite loss" in message and f"{kept} (step 64)" in message
    assert snapshot(kept) == good_bytes
    assert json.loads(Path(model_dir, "checkpoints", "state.json").read_text())["epoch"] == 2
    assert final.read_bytes() == final_bytes  # the diverged weights were not saved as the final model


def test_evaluate_and_export_match_the_trained_model(tmp_path):
    model_dir, export_dir = str(tmp_path / "xor"), str(tmp_path / "export")
    nntrain.train("xor", model_dir, strategy="cpu", verbose=0)
    evaluated = nntrain.evaluate(model_dir)
    assert evaluated["accuracy"] == 1.0
    exported = nntrain.export(model_dir, export_dir)
    assert [row["accuracy"] for row in exported["artifacts"]] == [1.0, 1.0]  # model.keras, saved_model
    inputs = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    keras_model = artifacts.load_model(model_dir)
    served = tf.saved_model.load(exported["saved_model"]).signatures["serving_default"](features=inputs)
    np.testing.assert_array_equal(keras_model.predict(inputs, verbose=0), served["probabilities"].numpy())
    np.testing.assert_array_equal(served["class_index"].numpy(), [0, 1, 1, 0])


def test_mirrored_follows_single_device_loss_curve(tmp_path):
    """Same global batch on 1 device and on 2 logical CPUs: per-epoch losses agree to 1e-4 relative."""
    config = nntrain.load_config("quadratic", {"train.epochs": 4, "data.shuffle_buffer": 1})
    nntrain.train(config, str(tmp_path / "single"), strategy="cpu", verbose=0)
    nntrain.train(config, str(tmp_path / "mirrored"), strategy="mirrored", verbose=0)
    single = [m["loss"] for m in _metrics_lines(tmp_path / "single")]
    mirrored = [m["loss"] for m in _metrics_lines(tmp_path / "mirrored")]
    assert len(single) == len(mirrored) == 4
    np.testing.assert_allclose(mirrored, single, rtol=1e-4)
    assert single[-1] < single[0]


@pytest.mark.fast
def test_execution_defaults_per_strategy():
    config = nntrain.load_config("xor", {"train.steps_per_execution": 4, "train.jit_compile": True})
    mirrored = execution.resolve(config.train, strategies.create_strategy("mirrored"), steps_per_epoch=100)
    assert (mirrored.steps_per_execution, mirrored.jit_compile) == (1, False)
    config = nntrain.load_config("xor", {"train.precision": "mixed_float16"})
    single = execution.resolve(config.train, strategies.create_strategy("cpu"), steps_per_epoch=3)
    assert (single.precision, single.steps_per_execution, single.jit_compile) == ("mixed_float16", 3, True)
    assert execution.resolve(nntrain.load_config("xor").train, strategies.create_strategy("cpu"), 100).precision \
        == "float32"


def test_float16_on_cpu_trains_through_xla(tmp_path):
    """mixed_float16 on CPU would be ~200x slower without XLA; nntrain turns XLA on and still learns."""
    config = nntrain.load_config("xor", {"train.precision": "mixed_float16"})
    metrics = nntrain.train(config, str(tmp_path / "fp16"), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] == 1.0
    model = artifacts.load_model(str(tmp_path / "fp16"))
    assert model.layers[1].dtype_policy.name == "mixed_float16"
    assert model.get_layer("predictions").dtype_policy.name == "float32"


def test_early_stopping_and_tensorboard_logs(tmp_path):
    """xor's val_accuracy is 1.0 after epoch 1 and cannot improve: patience 1 stops it after epoch 2."""
    config = nntrain.load_config("xor", {"train.early_stopping_patience": 1, "train.monitor": "val_accuracy",
                                         "train.tensorboard": True})
    nntrain.train(config, str(tmp_path / "early"), strategy="cpu", verbose=0)
    assert [m["epoch"] for m in _metrics_lines(tmp_path / "early")] == [1, 2]
    assert list((tmp_path / "early" / "logs" / "train").glob("events.out.tfevents.*"))
    assert list((tmp_path / "early" / "logs" / "validation").glob("events.out.tfevents.*"))
