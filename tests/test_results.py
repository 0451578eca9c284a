"""Library helpers the notebooks use: a run's history and predictions, and runtime detection."""

from __future__ import annotations

import numpy as np
import pytest

import nntrain
from nntrain.distribute import diagnostics, runtime


@pytest.fixture(scope="module")
def xor_run(tmp_path_factory) -> str:
    model_dir = str(tmp_path_factory.mktemp("xor") / "run")
    nntrain.train("xor", model_dir, strategy="cpu", verbose=0)
    return model_dir


@pytest.mark.fast
def test_history_has_one_line_per_epoch(xor_run):
    history = nntrain.history(xor_run)
    assert [h["epoch"] for h in history] == [1, 2, 3, 4, 5]
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(history[-1])


@pytest.mark.fast
def test_predict_returns_labels_and_the_models_answers(xor_run):
    predictions = nntrain.predict(xor_run, limit=3)
    assert predictions.features.shape == (3, 2) and predictions.labels.shape[0] == 3
    assert predictions.outputs.shape == (3, 1)
    np.testing.assert_array_equal(predictions.predicted, (predictions.outputs[:, 0] > 0.5).astype(np.int32))
    np.testing.assert_array_equal(predictions.predicted, predictions.labels.reshape(-1))  # xor is learnt


@pytest.mark.fast
def test_history_and_predict_name_the_fix_for_an_empty_dir(tmp_path):
    with pytest.raises(nntrain.NntrainError, match="train into it first"):
        nntrain.history(str(tmp_path))
    with pytest.raises(nntrain.NntrainError, match="train into it first"):
        nntrain.predict(str(tmp_path), limit=0)


@pytest.mark.fast
def test_detect_runtime_on_this_cpu_machine(monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    found = nntrain.detect_runtime()
    assert (found.accelerator, found.strategy, found.colab) == ("cpu", "auto", False)
    assert "CPU runtime" in found.describe()


def test_a_tpu_without_tpu_kernels_trains_on_cpu_and_says_how_to_fix_it(monkeypatch):
    monkeypatch.setenv("TPU_NAME", "my-tpu")
    assert runtime.tpu_attached()
    found = runtime.detect()
    assert (found.accelerator, found.strategy) == ("tpu", "cpu")
    assert diagnostics.tpu_install_line("2.21.0") in found.advice
    assert "tensorflow==2.20.0 tensorflow-tpu==2.20.0" in found.advice
