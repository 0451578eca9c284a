"""Step checkpoints written while training goes on (run/bundles.py, run/checkpoints.py): a snapshot that training
does not change, at most one write in flight, state.json committing only whole checkpoints; runs stopped by SIGTERM
or killed during a write, or signalled in an epoch's last execution, resume bit-identical (local disk and ram://);
a text_gpt run answers SIGTERM within seconds; an unfinished run says which checkpoint evaluate and export use.

Writes are slowed by wrapping `bundles.write` (in-process with monkeypatch, in a subprocess by a wrapper), not by
big models.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from corpora import TINY_GPT
from nntrain.experiments import text_gpt

import nntrain
from nntrain.errors import NntrainError
from nntrain.run import bundles
from nntrain.run.preemption import Preempted

REPO = Path(__file__).resolve().parent.parent
STEPS, EPOCHS = 4, 2  # TINY_GPT
SETTINGS = {**TINY_GPT, "train.steps_per_execution": 1, "model.dropout": 0.1,
            "train.checkpoint_every_steps": 1}
pytestmark = pytest.mark.slow


def _config():
    return nntrain.load_config("text_gpt", SETTINGS)


def _root(kind: str, tmp_path: Path, name: str) -> str:
    return f"ram://{tmp_path.name}/{name}" if kind == "ram" else str(tmp_path / name)


def _weights(model_dir: str) -> list[np.ndarray]:
    return keras.saving.load_model(f"{model_dir}/model.keras").get_weights()


def _metrics(model_dir: str) -> list[dict]:
    with tf.io.gfile.GFile(f"{model_dir}/metrics.jsonl") as f:
        return [json.loads(line) for line in f.read().splitlines()]


def _state(model_dir: str) -> dict:
    with tf.io.gfile.GFile(f"{model_dir}/checkpoints/state.json") as f:
        return json.loads(f.read())


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, list[np.ndarray]]:
    """The uninterrupted run's weights, trained on local disk and on ram:// once each."""
    root = tmp_path_factory.mktemp("reference")
    weights = {}
    for kind in ("local", "ram"):
        model_dir = _root(kind, root, f"straight-{kind}")
        nntrain.train(_config(), model_dir, strategy="cpu", verbose=0)
        weights[kind] = _weights(model_dir)
    return weights


def _assert_resumes_exactly(model_dir: str, expected: list[np.ndarray]) -> None:
    nntrain.train(_config(), model_dir, strategy="cpu", verbose=0)
    assert [m["epoch"] for m in _metrics(model_dir)] == [1, 2]
    assert all("val_loss" in m for m in _metrics(model_dir))
    for a, b in zip(_weights(model_dir), expected, strict=True):
        np.testing.assert_array_equal(a, b)


class _SignalBefore(keras.callbacks.Callback):
    """Sends this process SIGTERM before batch `batch` of the first epoch runs (so it lands in that execution)."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.epoch = batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if self.epoch == 0 and batch == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.fixture
def slow_writes(monkeypatch):
    """Every bundle write takes 0.5 s longer, and at most one runs at a time (asserted)."""
    write, running, overlaps = bundles.write, [], []

    def slow(*args):
        overlaps.append(len(running))
        running.append(1)
        time.sleep(0.5)
        write(*args)
        running.pop()

    monkeypatch.setattr(bundles, "write", slow)
    yield
    assert max(overlaps, default=0) == 0, "two writes were in flight at once"


def test_a_snapshot_is_written_as_it_was_taken_while_training_goes_on(tmp_path, monkeypatch):
    """The writer's tensors are the variables' buffers, yet steps taken during the write change none of them."""
    released, write = threading.Event(), bundles.write

    def held(*args):
        released.wait(60)
        write(*args)

    monkeypatch.setattr(bundles, "write", held)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dropout(0.5),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x, y = np.random.default_rng(0).normal(size=(32, 4)).astype("float32"), np.zeros((32, 1), "float32")
    model.fit(x, y, epochs=1, verbose=0)
    before = [v.numpy().copy() for v in [*model.variables, *model.optimizer.variables]]
    writer = bundles.Writer()
    writer.start(model, str(tmp_path / "step-1"))
    model.fit(x, y, epochs=2, verbose=0)  # the write is held until training moved every variable on
    released.set()
    assert writer.wait()
    moved = [v.numpy().copy() for v in [*model.variables, *model.optimizer.variables]]
    assert sum(not np.array_equal(a, b) for a, b in zip(before, moved)) >= len(before) - 1
    bundles.read(model, str(tmp_path / "step-1"))
    for a, v in zip(before, [*model.variables, *model.optimizer.variables], strict=True):
        np.testing.assert_array_equal(a, v.numpy())


@pytest.mark.parametrize("path", ["direct", "plain", "ram"])
def test_a_bundle_reads_back_exactly_whichever_way_it_was_written(path, tmp_path, monkeypatch):
    """O_DIRECT (tensors at page-congruent offsets), a local disk without it, and tf.io.gfile; a data file cut
    short is named by problem()."""
    if path == "plain":
        monkeypatch.delattr(os, "O_DIRECT", raising=False)
    directory = f"ram://{tmp_path.name}/step-1" if path == "ram" else str(tmp_path / "step-1")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1000), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    model.optimizer.build(model.trainable_variables)
    for variable in [*model.variables, *model.optimizer.variables]:
        variable.assign(np.random.default_rng(len(variable.path)).normal(size=variable.shape).astype(variable.dtype))
    before = [v.numpy().copy() for v in [*model.variables, *model.optimizer.variables]]
    writer = bundles.Writer()
    writer.start(model, directory)
    assert writer.wait() and bundles.problem(directory) is None
    for variable in [*model.variables, *model.optimizer.variables]:
        variable.assign(np.zeros(variable.shape, variable.dtype))
    bundles.read(model, directory)
    for a, v in zip(before, [*model.variables, *model.optimizer.variables], strict=True):
        np.testing.assert_array_equal(a, v.numpy())
    data = f"{directory}/{bundles.DATA}"
    with tf.io.gfile.GFile(data, "rb") as f:
        content = f.read()
    assert (len(content) > bundles.host_bytes(model)) == (path == "direct")  # O_DIRECT's padding
    tf.io.gfile.remove(data)  # (ram:// does not truncate a file it overwrites)
    with tf.io.gfile.GFile(data, "wb") as f:
        f.write(content[:-1])
    assert bundles.problem(directory) == (f"its data file tensors.data holds {len(content) - 1:,} bytes, its index "
                                          f"{len(content):,}")


@pytest.mark.parametrize("kind", ["local", "ram"])
def test_sigterm_during_a_write_commits_it_and_resumes_exactly(kind, tmp_path, reference, slow_writes, caplog):
    model_dir = _root(kind, tmp_path, "run")
    with pytest.raises(Preempted, match=r"by SIGTERM after step 2, "):  # step 1's write was still in flight
        nntrain.train(_config(), model_dir, strategy="cpu", verbose=0, callbacks=[_SignalBefore(1)])
    assert _state(model_dir)["step"] == 2 and _state(model_dir)["latest"] == "step-2"
    with caplog.at_level(logging.INFO, logger="nntrain"):
        nntrain.evaluate(model_dir)
    assert f"'{model_dir}' has not finished training: using the latest checkpoint (step 2 of 8)" in caplog.text
    with pytest.raises(NntrainError, match="has not finished training, and an export is a deliverable: resume it "
                                           r"with `nntrain train`, or export the latest checkpoint \(step 2 of 8\) "
                                           "with --checkpoint=latest"):
        nntrain.export(model_dir, _root(kind, tmp_path, "export"))
    _assert_resumes_exactly(model_dir, reference[kind])


@pytest.mark.parametrize("kind", ["local", "ram"])
def test_a_run_dying_during_a_write_resumes_exactly_from_the_previous_checkpoint(kind, tmp_path, reference,
                                                                                 monkeypatch):
    """The write of step 3 has written part of its files when the run dies: state.json still names step 2."""
    write, held, partial = bundles.write, threading.Event(), threading.Event()

    def dies_in_step_3(directory, names, tensors):
        if "step-3" not in directory:
            return write(directory, names, tensors)
        with tf.io.gfile.GFile(f"{directory}/{bundles.DATA}", "wb") as f:
            f.write(b"half of the data")
        partial.set()
        held.wait(60)  # never returns before the run is gone
        return None

    class Dies(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 2:
                raise RuntimeError("the process died here")

    model_dir = _root(kind, tmp_path, "run")
    monkeypatch.setattr(bundles, "write", dies_in_step_3)
    with pytest.raises(RuntimeError, match="died"):
        nntrain.train(_config(), model_dir, strategy="cpu", verbose=0, callbacks=[Dies()])
    assert partial.wait(30) and _state(model_dir)["latest"] == "step-2"
    assert tf.io.gfile.exists(f"{model_dir}/checkpoints/step-3/{bundles.DATA}")  # the half-written one
    monkeypatch.setattr(bundles, "write", write)
    _assert_resumes_exactly(model_dir, reference[kind])
    held.set()


def test_sigkill_during_a_write_resumes_exactly(tmp_path, reference):
    """A real SIGKILL while a (slowed) write is in flight: the run resumes from the last committed checkpoint."""
    model_dir = tmp_path / "run"
    slowed = ("import sys, time\nfrom nntrain.run import bundles\nwrite = bundles.write\n"
              "bundles.write = lambda *args: (time.sleep(1.5), write(*args))\n"
              "from nntrain import cli\ncli.run(['nntrain', *sys.argv[1:]])\n")
    args = ["train", "--experiment=text_gpt", "--strategy=cpu", f"--model_dir={model_dir}",
            *[f"--config.{key}={value}" for key, value in SETTINGS.items()]]
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen([sys.executable, "-c", slowed, *args], cwd=REPO, stderr=log,
                                   stdout=subprocess.DEVNULL)
    checkpoints, deadline = model_dir / "checkpoints", time.time() + 120

    def in_flight() -> bool:
        try:
            committed = json.loads((checkpoints / "state.json").read_text())["kept"]
        except (OSError, ValueError):
            return False
        return any(p.name.startswith("step-") and p.name not in committed for p in checkpoints.iterdir())

    while not in_flight() and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    process.kill()
    process.wait(timeout=30)
    state = json.loads((checkpoints / "state.json").read_text())
    assert 0 < state["step"] < STEPS * EPOCHS, (tmp_path / "log").read_text()[-2000:]
    assert [p.name for p in checkpoints.iterdir() if p.name.startswith("step-") and p.name not in state["kept"]]
    _assert_resumes_exactly(str(model_dir), reference["local"])


def test_a_signal_in_an_epochs_last_execution_loses_no_metrics_line(tmp_path, reference):
    """SIGTERM lands in the execution that ends epoch 1: its validation and metrics line come before the stop."""
    model_dir = str(tmp_path / "run")
    with pytest.raises(Preempted, match=rf"after step {STEPS}, "):
        nntrain.train(_config(), model_dir, strategy="cpu", verbose=0, callbacks=[_SignalBefore(STEPS - 1)])
    assert [m["epoch"] for m in _metrics(model_dir)] == [1] and "val_loss" in _metrics(model_dir)[0]
    assert _state(model_dir)["epoch"] == 1
    _assert_resumes_exactly(model_dir, reference["local"])


def test_text_gpt_answers_sigterm_within_seconds(tmp_path):
    """SIGTERM mid-epoch, once training runs (after its first step checkpoint): exit 143 within 5 s of the
    checkpoint's state.json and within 10 s of the signal."""
    model_dir = tmp_path / "run"
    # text_gpt's own corpus, the whole standard library: its input pipeline is among what must stop in time.
    settings = {**text_gpt.RUNLOCAL, "train.steps_per_epoch": 400, "train.epochs": 2,
                "train.checkpoint_every_steps": 16}
    args = [sys.executable, "-m", "nntrain.cli", "train", "--experiment=text_gpt", "--strategy=cpu",
            f"--model_dir={model_dir}", *[f"--config.{key}={value}" for key, value in settings.items()]]
    with open(tmp_path / "log", "w") as log:
        process = subprocess.Popen(args, cwd=REPO, stderr=log, stdout=subprocess.DEVNULL)
    deadline, state = time.time() + 180, model_dir / "checkpoints" / "state.json"
    while not state.exists() and process.poll() is None and time.time() < deadline:  # past tracing and the first
        time.sleep(0.05)  # fill of the shuffle buffer: a step checkpoint is committed
    signalled = time.time()
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=60)
    ended = time.time()
    text = (tmp_path / "log").read_text()
    assert code == 143 and "stopped by SIGTERM after step " in text, text[-2000:]
    committed = (model_dir / "checkpoints" / "state.json").stat().st_mtime
    assert ended - committed <= 5, f"exited {ended - committed:.1f}s after state.json"
    assert ended - signalled <= 10, f"exited {ended - signalled:.1f}s after SIGTERM"
