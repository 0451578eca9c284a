"""Runs stopped by real signals resume bit-identical to an uninterrupted run (CPU, float32, shuffle, augmentation,
dropout): SIGTERM/SIGINT at random moments save the exact step; SIGKILL resumes from the last step checkpoint."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
STEPS, EPOCHS = 125, 3  # per epoch: 4,000 examples / 32
TRAIN = ["train", "--experiment=mnist_mlp", "--strategy=cpu", f"--config.data.source=idx:{MNIST_DIR}",
         "--config.data.train_split=test[:4000]", "--config.data.eval_split=test[8000:8256]",
         "--config.train.batch_size=32", f"--config.train.epochs={EPOCHS}", "--config.model.dropout=0.3",
         "--config.data.augment=flip_crop", "--config.train.steps_per_execution=1", "--config.train.tensorboard=false",
         "--config.train.checkpoint_every_steps=40"]
PLAN_LINE = "steps_per_execution 1"  # logged just before training starts
pytestmark = pytest.mark.slow


def _start(model_dir: Path, log: Path) -> subprocess.Popen:
    with open(log, "w") as stderr:  # a file, not a pipe: nobody reads while training runs
        return subprocess.Popen([sys.executable, "-m", "nntrain.cli", *TRAIN, f"--model_dir={model_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def _wait_for(condition, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while not condition() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)


def _weights(model_dir: Path) -> list[np.ndarray]:
    return keras.saving.load_model(model_dir / "model.keras").get_weights()


def _step(model_dir: Path) -> int:
    path = model_dir / "checkpoints" / "state.json"
    try:
        return json.loads(path.read_text())["step"]
    except (OSError, ValueError):
        return 0


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> list[np.ndarray]:
    model_dir = tmp_path_factory.mktemp("reference") / "run"
    process = _start(model_dir, model_dir.parent / "log")
    assert process.wait(timeout=300) == 0, (model_dir.parent / "log").read_text()[-3000:]
    return _weights(model_dir)


def _assert_identical(model_dir: Path, reference: list[np.ndarray]) -> None:
    resumed = _weights(model_dir)
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, reference)) == 0.0
    assert [m["epoch"] for m in map(json.loads, (model_dir / "metrics.jsonl").read_text().splitlines())] == [1, 2, 3]


def test_sigterm_and_sigint_at_random_moments_resume_exactly(tmp_path, uninterrupted):
    model_dir, log = tmp_path / "run", tmp_path / "log"
    rng = random.Random(os.getpid())
    stops = []  # (signal, exit code, step saved)
    for attempt in range(3):
        process = _start(model_dir, log)
        _wait_for(lambda: log.exists() and PLAN_LINE in log.read_text(), process)
        time.sleep(rng.uniform(0.3, 1.5))
        signum = signal.SIGINT if attempt == 1 else signal.SIGTERM
        process.send_signal(signum)
        code = process.wait(timeout=120)
        if code == 0:
            break
        text = log.read_text()
        saved = re.findall(r"stopped by (SIG\w+) after step (\d+), saved to ", text)
        assert saved and "Traceback" not in text, text[-3000:]
        stops.append((saved[-1][0], code, int(saved[-1][1])))
    else:
        process = _start(model_dir, log)
        assert process.wait(timeout=300) == 0
    assert len(stops) >= 2, f"too few interruptions landed during training: {stops}"
    assert all(code == {"SIGTERM": 143, "SIGINT": 130}[name] for name, code, _ in stops), stops
    assert any(step % STEPS for _, _, step in stops), f"no stop landed mid-epoch: {stops}"
    _assert_identical(model_dir, uninterrupted)


def test_sigkill_resumes_exactly_from_the_last_step_checkpoint(tmp_path, uninterrupted):
    model_dir, log = tmp_path / "run", tmp_path / "log"
    process = _start(model_dir, log)
    _wait_for(lambda: _step(model_dir) >= 160, process)  # mid-epoch 2 (steps 125..250)
    process.kill()
    process.wait(timeout=60)
    killed_at = _step(model_dir)
    assert 0 < killed_at < STEPS * EPOCHS and killed_at % STEPS, f"not killed mid-epoch: step {killed_at}"
    assert _start(model_dir, log).wait(timeout=300) == 0, log.read_text()[-3000:]
    assert f"resuming from the checkpoint in {model_dir}/checkpoints: step {killed_at} of" in log.read_text()
    _assert_identical(model_dir, uninterrupted)


def test_tune_resume_after_sigterm_of_the_chief_continues(tmp_path):
    """SIGTERM to a running search after its first trial: `--resume` runs only the rest, and all are completed."""
    model_dir, log = tmp_path / "search", tmp_path / "log"
    command = [sys.executable, "-m", "nntrain.cli", "tune", "--experiment=xor", f"--model_dir={model_dir}",
               "--strategy=cpu", "--max_trials=3", "--config.train.epochs=2", "--config.train.steps_per_epoch=50"]
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr)
    _wait_for(lambda: "trial 1 (2/3) started" in log.read_text(), process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) != 0
    assert "trial 2 (3/3)" not in log.read_text(), "the search finished before the signal"
    again = subprocess.run([*command, "--resume", "--json"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "1 of 3 trials done before" in again.stderr
    assert "trial 0 (" not in again.stderr.split("trials done before")[1]  # the finished trial did not run again
    result = json.loads(again.stdout)
    assert sorted(t["trial"] for t in result["trials"]) == ["0", "1", "2"]
    assert all(t["status"] == "completed" for t in result["trials"])
