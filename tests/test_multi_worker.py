"""Multi-worker: TF_CONFIG from flags, the Keras reduce adapter, chief-only writes, lost peers, resume, launcher.

SIGTERM to one worker and the bit-identical resume against an uninterrupted 2-worker run are tested once, in
tests/test_resume_streams.py (two workers streaming their own tfrecord shards), with every assertion this file's
copy of that test made (both exit 143 at one step, each worker's resume line from the launcher, the chief's and
worker 1's last checkpoints equal, the final weights equal the reference's).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import keras
import local_workers
import numpy as np
import pytest
import tensorflow as tf

from nntrain.compat import mwms_reduce
from nntrain.distribute import cluster, launch, tf_config
from nntrain.errors import NntrainError
from nntrain.run import checkpoints

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
EPOCHS = 6
STEPS = 4  # per epoch
TRAIN = ["train", "--experiment=mnist_mlp", f"--config.data.source=idx:{MNIST_DIR}",
         "--config.data.train_split=test[:512]", "--config.data.eval_split=test[8000:8128]",
         "--config.train.batch_size=64", f"--config.train.steps_per_epoch={STEPS}", f"--config.train.epochs={EPOCHS}"]


@pytest.mark.fast
def test_tf_config_from_worker_flags(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    assert tf_config.build("10.0.0.1:2222, 10.0.0.2:2222", 1) == {
        "cluster": {"worker": ["10.0.0.1:2222", "10.0.0.2:2222"]}, "task": {"type": "worker", "index": 1}}
    assert tf_config.use_worker_flags("", None, "mirrored") == "mirrored"
    assert "TF_CONFIG" not in os.environ
    assert tf_config.use_worker_flags("a:1,b:2", 0, "auto") == "multi_worker"
    assert json.loads(os.environ["TF_CONFIG"])["task"] == {"type": "worker", "index": 0}
    for hosts, index, strategy, phrase in [("a:1,b", 0, "auto", "'b' is not HOST:PORT"),
                                           ("a:1,a:1", 0, "auto", "names a worker twice"),
                                           ("a:1,b:2", 2, "auto", "use 0 to 1"),
                                           ("a:1,b:2", None, "auto", "--task_index=None"),
                                           ("", 1, "auto", "--task_index needs --worker_hosts"),
                                           ("a:1,b:2", 0, "mirrored", "not --strategy=mirrored")]:
        with pytest.raises(NntrainError, match=phrase):
            tf_config.use_worker_flags(hosts, index, strategy)


@pytest.mark.fast
def test_reduce_adapter_takes_what_keras_passes():
    """The two calls of keras-team/keras#20585, on a strategy whose reduce rejects them in the same way."""
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    scalars = strategy.run(lambda: tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.float32))
    batch = strategy.run(lambda: (tf.ones([2, 3]), tf.zeros([2], tf.int32)))
    with pytest.raises(ValueError, match="Invalid reduction dimension 0"):
        strategy.reduce("MEAN", scalars, axis=0)
    mwms_reduce.patch(strategy)
    assert float(strategy.reduce("MEAN", scalars, axis=0)) == 0.5  # replicas 0 and 1
    features, labels = strategy.reduce("MEAN", batch, axis=None)
    assert features.shape == (2, 3) and labels.shape == (2,)
    assert float(strategy.reduce("SUM", batch[0], axis=0).numpy().sum()) == 12.0  # axis kept for non-scalars


@pytest.mark.fast
def test_single_process_runs_write_like_a_chief(tmp_path):
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")
    assert cluster.is_chief(strategy)
    assert cluster.output_dir(str(tmp_path), strategy) == str(tmp_path)
    with pytest.raises(tf.errors.UnavailableError):  # not multi-worker: the error is not rewritten
        with cluster.peer_failures(strategy):
            raise tf.errors.UnavailableError(None, None, "peer gone")


@pytest.mark.fast
def test_last_logs_of_a_worker():
    history = keras.callbacks.History()
    history.epoch, history.history = [2, 3], {"loss": [0.5, 0.25]}
    assert cluster.last_logs(history) == {"epoch": 4, "loss": 0.25}
    nothing_run = keras.callbacks.History()
    nothing_run.on_train_begin()  # resumed after the last epoch: fit runs no epoch
    assert cluster.last_logs(nothing_run) == {}


def test_launcher_prefixes_output_and_stops_all_when_one_fails(capsys):
    sleeper = [sys.executable, "-c", "import time; print('waiting', flush=True); time.sleep(120)"]
    failing = [sys.executable, "-c", "import time, sys; time.sleep(1); print('bad'); sys.exit(3)"]
    start = time.time()
    assert launch.run_workers([sleeper, failing]) == 3
    assert time.time() - start < 30
    out = capsys.readouterr().out
    assert "[worker 0] waiting" in out and "[worker 1] bad" in out
    with pytest.raises(NntrainError, match="runs a train command"):
        launch.worker_commands(2, ["evaluate", "--model_dir=x"])
    with pytest.raises(NntrainError, match="sets --task_index itself"):
        launch.worker_commands(2, [*TRAIN, "--task_index=0"])


@pytest.mark.fast
def test_a_killed_save_leaves_no_temporary_files(tmp_path):
    """A worker killed while saving leaves tmp-step-N.keras; the next run removes it (and keeps the rest)."""
    for name in ("tmp-step-8.keras", "tmp-state.json", "step-4.keras"):
        (tmp_path / name).write_text("{}")
    (tmp_path / "state.json").write_text('{"latest": "step-4.keras", "step": 4}')
    checkpoints.Checkpoints(str(tmp_path), "val_loss").on_train_begin()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json", "step-4.keras"]


def _epochs_done(model_dir: Path) -> int:
    path = model_dir / "metrics.jsonl"
    return len(path.read_text().splitlines()) if path.exists() else 0


def _weights(path: Path) -> list[np.ndarray]:
    return keras.saving.load_model(path).get_weights()


@pytest.mark.slow
def test_killed_worker_stops_its_peer_and_both_resume_in_step(tmp_path):
    """Two workers on 127.0.0.1; kill one mid-run: the other exits with one line. Start both again (with the
    launcher): they resume from the chief's checkpoint, finish every epoch and end with identical weights."""
    model_dir = tmp_path / "mw"
    logs = [tmp_path / f"worker{index}.log" for index in range(2)]
    workers = local_workers.start(TRAIN, model_dir, logs)
    try:
        deadline = time.time() + 120
        while _epochs_done(model_dir) < 2 and time.time() < deadline and workers[0].poll() is None:
            time.sleep(0.05)
        assert 2 <= _epochs_done(model_dir) < EPOCHS, "the run was not stopped mid-way"
        workers[1].kill()
        killed_at = time.time()
        workers[0].wait(timeout=60)
        assert time.time() - killed_at < 30
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=30)
    assert workers[0].returncode == 1
    chief_err = logs[0].read_text()
    assert "nntrain: error: worker 0 lost contact with worker 1 (stopped or unreachable)" in chief_err
    assert "Traceback" not in chief_err
    # One line: TensorFlow's C++ error records (E0000 ... file.cc:N]) went to its log file, not the terminal.
    assert [line for line in chief_err.splitlines() if "error" in line.lower()] == \
        [line for line in chief_err.splitlines() if line.startswith("nntrain: error: ")], chief_err
    assert len([line for line in chief_err.splitlines() if line.startswith("nntrain: error: ")]) == 1
    assert not re.search(r"^[EWF]\d{4} ", chief_err, re.MULTILINE), chief_err
    assert sorted(p.name for p in model_dir.iterdir()) == ["checkpoints", "config.json", "dataset.json", "logs",
                                                            "metrics.jsonl", "workers"]
    done_before = json.loads((model_dir / "checkpoints" / "state.json").read_text())["epoch"]

    again = subprocess.run([sys.executable, "-m", "nntrain.cli", "launch", "--workers=2", "--",
                            *TRAIN, f"--model_dir={model_dir}"], cwd=REPO, capture_output=True, text=True,
                           timeout=180)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-2000:]
    resumed = (f"resuming from the checkpoint in {model_dir}/checkpoints: step {done_before * STEPS} of "
               f"{EPOCHS * STEPS} ({done_before} of {EPOCHS} epochs done)")
    for index in range(2):
        assert any(line.startswith(f"[worker {index}] ") and resumed in line for line in again.stdout.splitlines())
    epochs = [json.loads(line)["epoch"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))
    chief, worker = model_dir / "checkpoints", model_dir / "workers" / "1" / "checkpoints"
    last = f"step-{EPOCHS * STEPS}.keras"
    assert sorted(p.name for p in worker.iterdir()) == ["state.json", last]  # no best, no model
    assert not (model_dir / "workers" / "1" / "model.keras").exists()
    for mine, theirs in zip(_weights(chief / last), _weights(worker / last)):
        np.testing.assert_array_equal(mine, theirs)
    for mine, final in zip(_weights(chief / last), _weights(model_dir / "model.keras")):
        np.testing.assert_array_equal(mine, final)
