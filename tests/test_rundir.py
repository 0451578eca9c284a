"""The run directory on any filesystem (ram:// stands in for gs://), exact step counts, determinism, strict JSON,
one "higher is better" rule."""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import tensorflow as tf

import nntrain
from nntrain import config as nn_config
from nntrain import rundir
from nntrain.compat import keras_metrics
from nntrain.errors import NntrainError
from nntrain.exports import artifacts
from nntrain.run import callbacks, runstate, trainer
from nntrain.run.trainer import TrainingDiverged


def _strict_lines(text: str) -> list[dict]:
    """Parses JSON lines, failing on NaN/Infinity tokens (which Python's json accepts by default)."""
    def reject(token: str) -> None:
        raise ValueError(f"non-JSON token {token}")
    return [json.loads(line, parse_constant=reject) for line in text.splitlines() if line]


@pytest.mark.fast
def test_run_resume_evaluate_export_on_ram_leave_local_disk_untouched(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model_dir, export_dir = "ram://bucket/xor", "ram://bucket/export"
    first = nntrain.load_config("xor", {"train.epochs": 2, "train.steps_per_epoch": 20, "train.tensorboard": True})
    nntrain.train(first, model_dir, strategy="cpu", verbose=0)
    metrics = nntrain.train(nntrain.load_config("xor", {"train.steps_per_epoch": 20, "train.tensorboard": True}),
                            model_dir, strategy="cpu", verbose=0)  # resumes at epoch 2 of 5
    assert metrics["epoch"] == 5
    assert [m["epoch"] for m in nntrain.history(model_dir)] == [1, 2, 3, 4, 5]
    assert rundir.read_state(rundir.checkpoint_dir(model_dir))["step"] == 100
    assert sorted(rundir.listdir(rundir.checkpoint_dir(model_dir))) == ["best.keras", "state.json", "step-100"]
    assert nntrain.evaluate(model_dir)["accuracy"] == 1.0
    exported = nntrain.export(model_dir, export_dir)
    assert [row["accuracy"] for row in exported["artifacts"]] == [1.0, 1.0]  # model.keras, serving SavedModel
    assert sorted(rundir.listdir(model_dir)) == ["checkpoints", "config.json", "dataset.json", "logs", "metrics.jsonl",
                                                  "model.keras"]
    assert rundir.glob(f"{model_dir}/logs/train/events.out.tfevents.*")
    assert sorted(rundir.listdir(export_dir)) == ["dataset.json", "model.keras", "saved_model"]
    assert list(tmp_path.iterdir()) == []  # no 'ram:' folder, no stray file


def test_run_files_are_read_once_and_metrics_written_once_per_epoch(tmp_path, monkeypatch):
    """metrics.jsonl is rewritten whole (object stores cannot append), from the lines kept in memory."""
    reads, writes = collections.Counter(), collections.Counter()
    read_text, write_text = rundir.read_text, rundir.write_text
    monkeypatch.setattr(rundir, "read_text", lambda path: reads.update([path.rsplit("/", 1)[-1]]) or read_text(path))
    monkeypatch.setattr(rundir, "write_text",
                        lambda path, text: writes.update([path.rsplit("/", 1)[-1]]) or write_text(path, text))
    model_dir, names = str(tmp_path / "run"), ("config.json", "dataset.json", "metrics.jsonl", "state.json")
    for epochs, metrics_writes in ((3, 1 + 3), (5, 2)):  # a new file, then a line per epoch; the resume: 2 epochs
        reads.clear(), writes.clear()
        config = nntrain.load_config("xor", {"train.epochs": epochs, "train.steps_per_epoch": 2,
                                             "train.tensorboard": False})
        nntrain.train(config, model_dir, strategy="cpu", verbose=0)
        assert [reads[name] for name in names] == [1, 1, 1, 1] and writes["metrics.jsonl"] == metrics_writes
    assert [m["epoch"] for m in nntrain.history(model_dir)] == [1, 2, 3, 4, 5]


@pytest.mark.fast
def test_run_state_puts_back_what_it_found(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    config_text = json.dumps(nn_config.to_dict(nntrain.load_config("xor")))  # not as nntrain formats it
    metrics_text = '{"epoch": 1,  "loss": 0.5}\n{"epoch": 2, "loss": 0.25}\n'
    (run / "config.json").write_text(config_text)
    (run / "metrics.jsonl").write_text(metrics_text)
    files = runstate.RunState.load(str(run))
    files.keep_metrics(2)
    assert (run / "metrics.jsonl").read_text() == metrics_text  # nothing dropped: not rewritten
    (run / "config.json").write_text("{}")  # what a diverging run writes
    files.add_metrics({"epoch": 3, "loss": float("nan")})
    assert _strict_lines((run / "metrics.jsonl").read_text())[2] == {"epoch": 3, "loss": None}
    (run / "checkpoints").mkdir()
    (run / "checkpoints" / "state.json").write_text('{"latest": "step-2.keras", "step": 2}')
    files.undo(steps_per_epoch=2)  # the checkpoint committed epoch 1
    assert (run / "config.json").read_text() == config_text and not (run / "dataset.json").exists()
    assert _strict_lines((run / "metrics.jsonl").read_text()) == [{"epoch": 1, "loss": 0.5}]


@pytest.mark.fast
def test_unknown_scheme_is_one_line_before_any_write(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(NntrainError, match=r"^model_dir 'nosuch://b/run': TensorFlow cannot open 'nosuch://'"):
        nntrain.train("xor", "nosuch://b/run", strategy="cpu", verbose=0)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("steps_per_execution", [1, 3, 8, None])
def test_optimizer_takes_exactly_epochs_times_steps(tmp_path, steps_per_execution):
    """10 steps per epoch, 3 epochs: 30 optimizer steps, and the cosine schedule reaches its end at the last."""
    config = nntrain.load_config("xor", {"train.epochs": 3, "train.steps_per_epoch": 10,
                                         "train.steps_per_execution": steps_per_execution,
                                         "schedule.name": "cosine", "schedule.end_learning_rate": 0.0})
    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    model = artifacts.load_model(str(tmp_path / "run"))
    assert int(model.optimizer.iterations) == 30
    rates = [m["learning_rate"] for m in nntrain.history(str(tmp_path / "run"))]
    assert rates[1] > 0.0 and rates[2] == pytest.approx(0.0, abs=1e-9)  # the schedule ends exactly at step 30


def test_same_config_twice_in_one_process_gives_identical_weights(tmp_path):
    config = nntrain.load_config("quadratic", {"train.epochs": 2, "train.steps_per_epoch": 8, "model.dropout": 0.2,
                                               "train.tensorboard": False})
    for name in ("a", "b"):
        nntrain.train(config, str(tmp_path / name), strategy="cpu", verbose=0)
    first, second = (artifacts.load_model(str(tmp_path / name)).get_weights() for name in ("a", "b"))
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_deterministic_turns_on_op_determinism(monkeypatch):
    """Checked through the call: TensorFlow has no public switch to turn it off again for the next tests."""
    calls = []
    monkeypatch.setattr(tf.config.experimental, "enable_op_determinism", lambda: calls.append(True))
    trainer.seed_everything(nntrain.load_config("xor"))
    assert calls == []
    trainer.seed_everything(nntrain.load_config("xor", {"train.deterministic": True}))
    assert calls == [True]


@pytest.mark.fast
def test_metrics_file_is_strict_json_and_keeps_no_diverged_epoch(tmp_path):
    config = nntrain.load_config("quadratic", {"train.epochs": 2, "optimizer.learning_rate": 1e30,
                                               "train.tensorboard": False})
    with pytest.raises(TrainingDiverged):
        nntrain.train(config, str(tmp_path / "nan"), strategy="cpu", verbose=0)
    metrics = tmp_path / "nan" / "metrics.jsonl"
    assert all(line["loss"] is not None for line in _strict_lines(metrics.read_text() if metrics.exists() else ""))
    assert _strict_lines(rundir.dumps({"loss": float("nan"), "val": [float("inf")]})) == [{"loss": None, "val": [None]}]


@pytest.mark.fast
def test_keras_metric_directions():
    """Keras's private Metric._direction (nntrain/compat/keras_metrics.py) still says which way metrics improve."""
    assert keras_metrics.direction("r2_score") == "up" and keras_metrics.direction("mse") == "down"
    assert keras_metrics.direction("no_such_metric") is None


@pytest.mark.fast
def test_one_rule_for_higher_is_better():
    assert callbacks.monitor_mode("val_r2_score") == "max"
    assert callbacks.monitor_mode("val_loss") == "min" and callbacks.monitor_mode("val_accuracy") == "max"
    assert callbacks.monitor_mode("val_r2_score", "min") == "min"
    with pytest.raises(NntrainError, match="train.monitor_mode=max"):
        callbacks.monitor_mode("val_custom")
    assert callbacks.early_stopping("val_r2_score", "auto", 2).mode == "max"


def test_best_checkpoint_keeps_the_highest_r2(tmp_path):
    model_dir = tmp_path / "r2"
    config = nntrain.load_config("quadratic", {"train.epochs": 4, "train.metrics": ("r2_score",),
                                               "train.monitor": "val_r2_score", "train.tensorboard": False})
    nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
    scores = [m["val_r2_score"] for m in nntrain.history(str(model_dir))]
    state = json.loads((model_dir / "checkpoints" / "state.json").read_text())
    assert state["mode"] == "max" and state["best"] == pytest.approx(max(scores))
    best = nntrain.evaluate(str(model_dir), checkpoint="best")
    assert best["r2_score"] == pytest.approx(max(scores), abs=1e-5)


def test_search_on_ram_is_reproducible_and_leaves_local_disk_untouched(tmp_path, monkeypatch):
    """Trial dirs, oracle state, results and best_config.py all on ram://; the same search twice scores the same."""
    monkeypatch.chdir(tmp_path)
    overrides = {"train.epochs": 1, "train.steps_per_epoch": 5, "model.dropout": 0.2}
    scores = []
    for name in ("a", "b"):
        result = nntrain.tune("xor", f"ram://bucket/tune-{name}", overrides, strategy="cpu", max_trials=2,
                              verbose=False)
        scores.append([(t["trial"], t["score"]) for t in result["trials"]])
        assert {"results.csv", "results.json", "best_config.py", "search.json", "search"} <= set(
            rundir.listdir(f"ram://bucket/tune-{name}"))
    assert scores[0] == scores[1] and all(score is not None for _, score in scores[0])
    assert list(tmp_path.iterdir()) == []


def test_find_lr_on_ram(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = nntrain.find_lr(nntrain.load_config("xor"), "ram://bucket/lr", strategy="cpu", num_steps=8)
    assert result["csv"] == "ram://bucket/lr/lr_range.csv"
    assert rundir.read_text(result["csv"]).startswith("step,learning_rate,loss,smoothed_loss")
    with tf.io.gfile.GFile(result["png"], "rb") as png:
        assert png.read(8) == b"\x89PNG\r\n\x1a\n"
    assert list(tmp_path.iterdir()) == []
