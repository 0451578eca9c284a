"""Magnitude pruning: the schedule, masks that survive optimizer updates and resumes, plain-Keras results."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

import nntrain
from nntrain.errors import NntrainError
from nntrain.exports import artifacts
from nntrain.run import bundles, prune

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
MNIST_8K_2K = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:8000]",
               "data.eval_split": "test[8000:]", "train.tensorboard": False}


def _prune_config(**overrides):
    return nntrain.load_config("mnist_mlp", {f"prune.{k}": v for k, v in overrides.items()}).prune


@pytest.mark.fast
def test_polynomial_schedule_of_zhu_and_gupta():
    config = _prune_config(target_sparsity=0.8, begin_step=100, end_step=300, power=3.0)
    assert prune.sparsity(config, 50, 1000) == 0.0
    assert prune.sparsity(config, 100, 1000) == pytest.approx(0.0)
    assert prune.sparsity(config, 200, 1000) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert prune.sparsity(config, 300, 1000) == pytest.approx(0.8)
    assert prune.sparsity(config, 900, 1000) == pytest.approx(0.8)
    default_end = _prune_config(target_sparsity=0.5)  # end_step None: 3/4 of training
    assert prune.sparsity(default_end, 749, 1000) < 0.5 == prune.sparsity(default_end, 750, 1000)


@pytest.mark.parametrize("value", ["1.0", "-0.1"])
@pytest.mark.fast
def test_sparsity_outside_0_1_is_an_error(value):
    with pytest.raises(NntrainError, match=rf"config.prune.target_sparsity={float(value)} .*\[0, 1\)"):
        nntrain.load_config("mnist_mlp", {"prune.target_sparsity": value})


def test_cli_rejects_full_sparsity_in_one_line_and_writes_nothing(tmp_path):
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "train", "--experiment=xor",
                             f"--model_dir={tmp_path / 'run'}", "--config.prune.target_sparsity=1"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "nntrain: error: config.prune.target_sparsity=1.0 is not allowed: it must be in [0, 1), e.g. 0.8"]
    assert os.listdir(tmp_path) == []


def _dense_kernels(path: Path) -> dict[str, np.ndarray]:
    model = keras.saving.load_model(path)
    return {layer.name: layer.kernel.numpy() for layer in model.layers if isinstance(layer, keras.layers.Dense)}


def _latest_masks(model_dir: Path) -> list[np.ndarray]:
    """The masks of the run's latest step checkpoint (a bundle), loaded into the run's model."""
    return [mask.numpy() for mask in artifacts.load_model(str(model_dir), "latest").pruning.masks]


def _checkpoint_masks(path: Path) -> list[np.ndarray]:
    with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f) as weights:
        masks = weights["pruning/vars"]
        return [masks[key][()] for key in sorted(masks, key=int) if masks[key].ndim == 2]


@pytest.mark.slow
def test_mnist_mlp_pruned_to_80_percent_resumed_mid_pruning(tmp_path, monkeypatch):
    """3 epochs, stop (mid-schedule), resume to 10: masks come back from the checkpoint and are never lost."""
    model_dir = tmp_path / "pruned"
    overrides = {**MNIST_8K_2K, "prune.target_sparsity": 0.8, "prune.frequency": 20, "prune.end_step": 400}
    stop_after_3 = keras.callbacks.LambdaCallback(  # a 3-epoch run would be refused: pruning ends after it
        on_epoch_end=lambda epoch, logs: setattr(stop_after_3.model, "stop_training", epoch == 2))
    nntrain.train(nntrain.load_config("mnist_mlp", {**overrides, "train.epochs": 10}), str(model_dir),
                  strategy="cpu", verbose=0, callbacks=[stop_after_3])
    masks = _latest_masks(model_dir)
    assert len(masks) == 3 and all(0.3 < np.mean(mask == 0) < 0.8 for mask in masks)  # mid-pruning
    best = model_dir / "checkpoints" / "best.keras"
    with zipfile.ZipFile(best) as archive:  # the masks are weights only: no nntrain class in the config
        assert "nntrain" not in archive.read("config.json").decode()
    assert len(_checkpoint_masks(best)) == 3 and len(_dense_kernels(best)) == 3

    config = nntrain.load_config("mnist_mlp", {**overrides, "train.epochs": 10})
    resumed_with = []  # the masks the resumed run starts from
    monkeypatch.setattr(prune.Prune, "on_train_begin", lambda self, logs=None: resumed_with.append(
        [mask.numpy() for mask in self.model.pruning.masks]))
    metrics = nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
    assert len(resumed_with) == 1
    for restored, saved in zip(resumed_with[0], masks):
        np.testing.assert_array_equal(restored, saved)
    assert metrics["epoch"] == 10 and metrics["val_accuracy"] >= 0.96, metrics
    kernels = _dense_kernels(model_dir / "model.keras")  # plain Keras: the masks were stripped
    assert len(kernels) == 3
    for (name, kernel), mask in zip(kernels.items(), masks):
        assert np.mean(kernel == 0) >= 0.79, name
        assert np.all(kernel[mask == 0] == 0), f"{name}: a weight pruned before the resume grew back"
        assert metrics[f"sparsity/{name}"] >= 0.79
    assert nntrain.evaluate(str(model_dir))["accuracy"] >= 0.96


def test_pruning_under_gradient_accumulation_reaches_its_target(tmp_path):
    """The default end (3/4 of the run) counts updates, as the masks' steps do: 16 batches are 8 updates; counted in
    batches the end (12) came after the last update and the kernels stopped short of the target."""
    config = nntrain.load_config("xor", {"train.epochs": 2, "train.steps_per_epoch": 8, "train.tensorboard": False,
                                         "optimizer.gradient_accumulation_steps": 2, "prune.target_sparsity": 0.5,
                                         "prune.frequency": 1})
    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    kernels = _dense_kernels(tmp_path / "run" / "model.keras")
    assert kernels and all(np.mean(kernel == 0) >= 0.49 for kernel in kernels.values())


@pytest.mark.slow
def test_pruning_under_mirrored_strategy(tmp_path):
    overrides = {**MNIST_8K_2K, "data.train_split": "test[:2048]", "train.epochs": 2, "prune.target_sparsity": 0.5,
                 "prune.frequency": 4, "prune.end_step": 16}
    metrics = nntrain.train(nntrain.load_config("mnist_mlp", overrides), str(tmp_path / "run"), strategy="mirrored",
                            verbose=0)
    kernels = _dense_kernels(tmp_path / "run" / "model.keras")
    assert all(np.mean(kernel == 0) >= 0.49 for kernel in kernels.values()), metrics


@pytest.mark.slow
def test_pruning_under_multi_worker_strategy(tmp_path):
    """Two workers on 127.0.0.1 (nntrain launch): both end with the same masks and kernels, and the chief's
    model.keras holds the target sparsity in every Dense kernel."""
    model_dir, steps = tmp_path / "mw", 12
    train = ["train", "--experiment=mnist_mlp", f"--model_dir={model_dir}", f"--config.data.source=idx:{MNIST_DIR}",
             "--config.data.train_split=test[:512]", "--config.data.eval_split=test[8000:8128]",
             "--config.train.batch_size=64", "--config.train.steps_per_epoch=4", "--config.train.epochs=3",
             "--config.train.tensorboard=False", "--config.prune.target_sparsity=0.8", "--config.prune.frequency=2",
             f"--config.prune.end_step={steps - 4}"]
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "launch", "--workers=2", "--", *train], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    output = result.stdout + result.stderr
    for index in range(2):
        assert f"[worker {index}] " in output and f"[task:{index}/device:CPU:0]" in output
    assert "CollectiveAllReduceStrategy with 2 replica(s)" in output
    metrics = json.loads((model_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["epoch"] == 3 and all(metrics[f"sparsity/{name}"] >= 0.79
                                         for name in ("dense", "dense_1", "predictions")), metrics
    last = f"step-{steps}"
    chief, worker = (bundles.load(str(root / "checkpoints" / last))
                     for root in (model_dir, model_dir / "workers" / "1"))
    assert chief.keys() == worker.keys()
    for name in chief:  # the workers' checkpoints hold the same masks, weights and optimizer state
        np.testing.assert_array_equal(chief[name], worker[name])
    chief_masks = _latest_masks(model_dir)
    assert len(chief_masks) == 3 and all(np.mean(mask == 0) >= 0.79 for mask in chief_masks)
    kernels = _dense_kernels(model_dir / "model.keras")
    assert len(kernels) == 3
    for (name, kernel), mask in zip(kernels.items(), chief_masks):
        assert np.sum(kernel == 0) >= int(0.8 * kernel.size), name
        assert np.all(kernel[mask == 0] == 0), name
