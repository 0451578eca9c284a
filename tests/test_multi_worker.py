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

from nntrain import rundir
from nntrain.compat import mwms_reduce
from nntrain.distribute import cluster, launch, resolvers, tf_config
from nntrain.errors import NntrainError
from nntrain.run import bundles, checkpoints

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


def _assert_same_bundles(mine: dict[str, np.ndarray], theirs: dict[str, np.ndarray]) -> None:
    assert mine.keys() == theirs.keys()
    for name in mine:
        np.testing.assert_array_equal(mine[name], theirs[name])


@pytest.mark.fast
def test_workers_checking_one_model_dir_at_once_do_not_fail_on_each_others_directories(tmp_path, monkeypatch):
    """Three workers restarting on one model_dir each probe every directory of it: one worker's probe directory,
    or a stale checkpoint the chief removes, vanished under another's walk ('not writable', seen on 3 hosts)."""
    checkpoints_dir = tmp_path / "run" / "checkpoints"
    for name in ("step-10", "step-15", "step-15/.nntrain-probe-of-another-worker"):
        (checkpoints_dir / name).mkdir(parents=True)
    probed, mkdtemp = [], rundir.tempfile.mkdtemp

    def others_meanwhile(prefix: str, dir: str) -> str:  # noqa: A002 (tempfile's name)
        if not probed:  # the chief drops its stale checkpoint, another worker its probe, after this walk listed them
            for name in ("step-10", "step-15/.nntrain-probe-of-another-worker"):
                (checkpoints_dir / name).rmdir()
        probed.append(dir)
        return mkdtemp(prefix=prefix, dir=dir)

    monkeypatch.setattr(rundir.tempfile, "mkdtemp", others_meanwhile)
    rundir.check(str(tmp_path / "run"))
    assert str(checkpoints_dir / "step-15") in probed and str(checkpoints_dir / "step-10") in probed
    assert not any(".nntrain-probe-" in directory for directory in probed)


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
    last = f"step-{EPOCHS * STEPS}"
    assert sorted(p.name for p in worker.iterdir()) == ["state.json", last]  # no best, no model
    assert not (model_dir / "workers" / "1" / "model.keras").exists()
    _assert_same_bundles(bundles.load(str(chief / last)), bundles.load(str(worker / last)))
    saved = bundles.load(str(chief / last))
    for index, final in enumerate(_weights(model_dir / "model.keras")):  # an MLP: its variables are its weights
        np.testing.assert_array_equal(saved[f"model/{index}"], final)


@pytest.mark.fast
def test_cluster_from_a_tfjob_tf_config_and_from_a_slurm_step(monkeypatch):
    """The cluster spec each scheduler's environment gives: Kubeflow TFJob (TF_CONFIG, workers only), Vertex AI
    (TF_CONFIG with a chief pool) and a Slurm step of 3 tasks (srun's variables), two tasks sharing a node."""
    for name in ("TF_CONFIG", "CUDA_VISIBLE_DEVICES", "SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST",
                 "SLURM_STEP_TASKS_PER_NODE"):
        monkeypatch.delenv(name, raising=False)
    tfjob = [f"mnist-worker-{i}.default.svc:2222" for i in range(3)]
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": tfjob}, "task": {"type": "worker", "index": 1},
                                                "environment": "cloud"}))
    resolver = resolvers.resolve()
    assert resolver.cluster_spec().as_dict() == {"worker": tfjob}
    assert (resolver.task_type, resolver.task_id, resolvers.tasks(resolver)) == ("worker", 1, tfjob)
    vertex = {"chief": ["workerpool0-0:2222"], "worker": ["workerpool1-0:2222", "workerpool1-1:2222"]}
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": vertex, "task": {"type": "chief", "index": 0}}))
    resolver = resolvers.resolve()
    assert resolvers.this_task(resolver) == "chief 0"
    assert resolvers.tasks(resolver) == ["workerpool0-0:2222", "workerpool1-0:2222", "workerpool1-1:2222"]
    for bad, phrase in [("{", "TF_CONFIG is not valid"), ('{"cluster": {"worker": ["a:1"]}}', "TF_CONFIG is not valid"),
                        ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 1}}',
                         "task worker 1 is not in its cluster")]:
        monkeypatch.setenv("TF_CONFIG", bad)
        with pytest.raises(NntrainError, match=phrase):
            resolvers.resolve()

    monkeypatch.delenv("TF_CONFIG")
    with pytest.raises(NntrainError, match="needs TF_CONFIG .* or a Slurm step"):
        resolvers.resolve()
    monkeypatch.setenv("SLURM_PROCID", "2")
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "3")
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[01-03]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "1(x3)")
    resolver = resolvers.resolve()
    assert resolver.cluster_spec().as_dict() == {"worker": ["node01:8888", "node02:8888", "node03:8888"]}
    assert (resolver.task_type, resolver.task_id) == ("worker", 2)
    assert resolver.num_accelerators() == {}  # this machine's GPUs (none), not the slot TensorFlow's resolver counts
    assert "CUDA_VISIBLE_DEVICES" not in os.environ  # Slurm binds GPUs; TensorFlow's resolver is told not to
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[01-02]")
    monkeypatch.setenv("SLURM_STEP_TASKS_PER_NODE", "2,1")
    assert resolvers.tasks(resolvers.resolve()) == ["node01:8888", "node01:8889", "node02:8888"]


@pytest.mark.fast
def test_the_lost_peer_is_named_from_tensorflows_messages():
    """The messages TensorFlow 2.21 gave in tests/test_hosts.py's faults, shortened."""
    unhealthy = ("Error reported from /job:worker/task:1: The following tasks are unhealthy (stopped sending "
                 "heartbeats):\n/job:worker/replica:0/task:1\nThe tasks have crashed.")
    assert cluster._lost_peers(unhealthy, 0) == "worker 1 (stopped or unreachable)"
    assert cluster._lost_peers("remote target /job:worker/replica:0/task:0 ... /job:worker/replica:0/task:2", 1) == \
        "workers 0, 2 (stopped or unreachable)"
    silent_leader = "Deadline Exceeded\n\nRPC: /tensorflow.CoordinationService/Heartbeat"
    assert cluster._lost_peers(silent_leader, 2) == "worker 0 (stopped or unreachable)"
    myself = ("Unexpected heartbeat request from an already-in-error task: /job:worker/replica:0/task:0 with existing "
              "error: UNAVAILABLE: Task /job:worker/replica:0/task:0 heartbeat timeout.\n\nRPC: "
              "/tensorflow.CoordinationService/Heartbeat")
    assert cluster._lost_peers(myself, 0).startswith("its peers (this worker sent no heartbeat")
    assert cluster._lost_peers("Deadline Exceeded", 1) == "its peers (a worker stopped or is unreachable)"
