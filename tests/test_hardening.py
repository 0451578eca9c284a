"""Hardening (issue 14): bad data, config values that pass validation, sizes and export targets.

Each case runs the CLI in-process and must end with exit != 0, exactly one error line on stderr, no traceback,
and every file of a pre-existing run hash-identical.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_failures, closed_port

from nntrain import cli, rundir
from nntrain import config as nn_config
from nntrain.data import checks, service, sources
from nntrain.data.splits import Split
from nntrain.distribute import launch
from nntrain.errors import NntrainError
from nntrain.run import checkpoints, guards
from nntrain.tuning import distributed

REPO = Path(__file__).resolve().parent.parent
XOR = ["--experiment=xor", "--config.train.epochs=1", "--config.train.steps_per_epoch=2"]


@pytest.fixture
def earlier_run(tmp_path: Path) -> Path:
    """The files of a run that is already there (as a training run leaves them)."""
    run = tmp_path / "earlier"
    (run / "checkpoints").mkdir(parents=True)
    nn_config.save(nn_config.resolve("xor"), str(run))  # the xor cases below resume it, as far as checks let them
    (run / "metrics.jsonl").write_text('{"epoch": 1, "loss": 0.5}\n')
    keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]).save(run / "checkpoints" / "epoch-1.keras")
    (run / "checkpoints" / "state.json").write_text('{"epoch": 1, "latest": "epoch-1.keras"}\n')
    return run


def _npz(path: Path, x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray | None = None,
         y_test: np.ndarray | None = None) -> str:
    np.savez(path, x_train=x_train, y_train=y_train,
             x_test=x_train[:4] if x_test is None else x_test, y_test=y_train[:4] if y_test is None else y_test)
    return f"--config.data.source=npz:{path}"


def _images(n: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.uniform(size=(n, 4, 4, 1)).astype(np.float32), rng.integers(0, 3, size=n)


def _tfrecord(path: Path, labels: list[int]) -> str:
    with tf.io.TFRecordWriter(str(path)) as writer:
        for label in labels:
            features = {"x": tf.train.Feature(float_list=tf.train.FloatList(value=[0.5] * 4)),
                        "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[label]))}
            writer.write(tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString())
    return f"--config.data.source=tfrecord:{path}"


def _experiment(path: Path, body: str) -> str:
    path.write_text(f"def get_config():\n    {body}\n")
    return f"--experiment={path}"


def _cases(tmp: Path, run: Path) -> list[tuple[str, list[str], str]]:
    """(name, arguments, a phrase the error line must contain)."""
    new = f"--model_dir={tmp / 'new_run'}"
    md = f"--model_dir={run}"
    mnist = ["--experiment=mnist_mlp", new, "--config.train.epochs=1", "--config.train.batch_size=4",
             "--config.data.train_split=train", "--config.data.eval_split=test"]
    x, y = _images()
    nan_x = x.copy()
    nan_x[3, 1, 2, 0] = np.nan
    inf_test = x[:4].copy()
    inf_test[2, 0, 0, 0] = np.inf
    a_file = tmp / "a_file"
    a_file.write_text("not a directory")
    return [
        # bad array data
        ("x longer than y", ["train", *mnist, _npz(tmp / "long.npz", x, y[:-2])], "16 rows of x but 14 labels"),
        ("NaN pixel in train", ["train", *mnist, _npz(tmp / "nan.npz", nan_x, y)],
         "split 'train' of data.source=npz:"),
        ("NaN pixel names index", ["train", *mnist, _npz(tmp / "nan2.npz", nan_x, y)], "first at index 3"),
        ("inf in eval split", ["train", *mnist, _npz(tmp / "inf.npz", x, y, inf_test, y[:4])],
         "split 'test' of"),
        ("negative label", ["train", *mnist, _npz(tmp / "neg.npz", x, np.where(y == 0, -1, y))],
         "outside 0.."),
        ("string labels", ["train", *mnist, _npz(tmp / "str.npz", x, y.astype(str))], "are not numbers"),
        ("label >= num_classes (tfrecord)", ["train", *mnist, _tfrecord(tmp / "r.tfrecord", [0, 1, 12, 2] * 2),
                                             "--config.data.input_shape=2,2,1", "--config.data.num_classes=10",
                                             "--config.data.eval_split=train"],
         "label(s) outside 0..9, the first 12 at index 2"),
        # config values that pass validation but fail later
        ("misspelt metric", ["train", *XOR, md, "--config.train.metrics=acuracy"], "no metric 'acuracy'"),
        ("misspelt second metric", ["train", *XOR, md, "--config.train.metrics=accuracy,aucc"], "no metric 'aucc'"),
        ("infinite learning rate", ["train", *XOR, md, "--config.optimizer.learning_rate=inf"],
         "optimizer.learning_rate=inf"),
        ("NaN momentum", ["train", *XOR, md, "--config.optimizer.momentum=nan"], "finite number"),
        ("infinite clip norm", ["train", *XOR, md, "--config.optimizer.global_clip_norm=-inf"], "global_clip_norm"),
        ("model_dir under /proc", ["train", *XOR, "--model_dir=/proc/nntrain-run"], "not writable"),
        ("get_config raises", ["train", _experiment(tmp / "raises.py", "raise KeyError('lr')"), new],
         "get_config() failed: KeyError"),
        ("get_config returns a dict", ["train", _experiment(tmp / "dict.py", "return {'seed': 1}"), new],
         "returned dict"),
        ("get_config returns None", ["train", _experiment(tmp / "none.py", "return None"), new], "returned NoneType"),
        # sizes
        ("batch of 10**9", ["train", *XOR, md, "--config.train.batch_size=1000000000"], "larger than the train split"),
        ("batch above the split", ["train", *mnist, _npz(tmp / "ok.npz", x, y), "--config.train.batch_size=32"],
         "use --config.train.batch_size=16 or less"),
        ("eval_steps beyond the split", ["train", *XOR, md, "--config.train.eval_steps=5"], "eval_steps=5"),
        # configs that cannot do what they say (the run has 1 epoch of 2 steps)
        ("gradient accumulation longer than the run",
         ["train", *XOR, new, "--config.optimizer.gradient_accumulation_steps=3"],
         "optimizer.gradient_accumulation_steps=3 is more than the run's 2 steps (train.epochs=1 x 2 steps per "
         "epoch): no update would be applied"),
        ("pruning that begins after the run", ["train", *XOR, new, "--config.prune.target_sparsity=0.5",
                                               "--config.prune.begin_step=5"],
         "prune.begin_step=5 is not before the run's last update (update 2 of train.epochs=1 x 2 steps per epoch)"),
        ("pruning that ends after the run", ["train", *XOR, new, "--config.prune.target_sparsity=0.5",
                                             "--config.prune.end_step=10"],
         "prune.end_step=10 is after the run's last update (update 2 of"),
        # export targets
        ("export to a file", ["export", md, f"--export_dir={a_file}"], "is an existing file"),
        ("export inside the run", ["export", md, f"--export_dir={run / 'export'}"], "lies inside the run"),
        ("export where nothing can be written", ["export", md, "--export_dir=/proc/nntrain-export"], "not writable"),
        # wrong kind of directory
        ("tune --resume on a training run", ["tune", "--experiment=xor", md, "--resume", "--max_trials=1"],
         "holds a training run"),
        ("tune on a training run", ["tune", "--experiment=xor", md, "--max_trials=1"], "holds a training run"),
        ("tune where nothing can be written", ["tune", "--experiment=xor", "--model_dir=/proc/nntrain-search"],
         "not writable"),
        ("tune with a misspelt metric", ["tune", "--experiment=xor", new, "--config.train.metrics=acuracy"],
         "no metric 'acuracy'"),
        # bounded waits
        ("no wait at all", ["train", *XOR, md, "--worker_timeout=0"], "--worker_timeout=0.0 is not allowed"),
        ("infinite wait", ["train", *XOR, md, "--worker_timeout=inf"], "--worker_timeout=inf is not allowed"),
    ]


def test_bad_inputs_fail_in_one_line_and_change_nothing(tmp_path, earlier_run, capfd, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    cases = _cases(tmp_path, earlier_run)
    failures = cli_failures(cases, tmp_path, capfd)
    assert not failures, "\n".join(failures)
    assert not (tmp_path / "new_run").exists()


def _read_only(directory: Path, on: bool) -> None:
    """Makes a directory read-only (or writable again); for root, whom permissions do not stop, immutable."""
    if os.geteuid() == 0:
        subprocess.run(["chattr", "+i" if on else "-i", str(directory)], check=True)
    else:
        directory.chmod(0o555 if on else 0o755)


def test_a_read_only_checkpoints_dir_is_refused_before_a_file_changes(tmp_path, earlier_run, capfd):
    """Resuming wrote config.json and metrics.jsonl, then failed on the first checkpoint with a traceback."""
    _read_only(earlier_run / "checkpoints", True)
    try:
        failures = cli_failures([("read-only checkpoints/", ["train", *XOR, f"--model_dir={earlier_run}"],
                                  f"(creating a directory in '{earlier_run / 'checkpoints'}' failed: ")],
                                tmp_path, capfd)
    finally:
        _read_only(earlier_run / "checkpoints", False)
    assert not failures, "\n".join(failures)


def test_a_model_with_a_nan_weight_is_never_saved(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="dense")])
    kernel = model.layers[0].kernel
    kernel.assign(np.where(np.arange(6).reshape(2, 3) == 4, np.nan, 0.0).astype(np.float32))
    with pytest.raises(rundir.NonFiniteWeights, match=r"dense/kernel holds 1 NaN/inf value\(s\)"):
        rundir.save_model(model, str(tmp_path / "model.keras"))
    assert list(tmp_path.iterdir()) == []
    kernel.assign(np.zeros((2, 3), np.float32))
    rundir.save_model(model, str(tmp_path / "model.keras"))
    assert (tmp_path / "model.keras").is_file()


def test_a_checkpoint_of_nan_weights_is_refused_not_skipped(tmp_path):
    """Checkpoints has no rule of its own: rundir.check_finite, in the writer, stops training at the save."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3, name="dense")])
    model.compile(optimizer="sgd", loss="mse")
    model.layers[0].kernel.assign(np.full((2, 3), np.inf, np.float32))
    saver = checkpoints.Checkpoints(str(tmp_path), "loss")
    saver.set_model(model)
    saver.save(3)
    with pytest.raises(rundir.NonFiniteWeights, match=r"dense/kernel holds 6 NaN/inf .*/step-3 was not written"):
        saver.wait()
    assert list(tmp_path.iterdir()) == []  # no checkpoint, no state.json


def test_with_data_checks_off_a_nan_pixel_stops_at_the_first_save(tmp_path, capfd, monkeypatch):
    """The last line of defence: NaN weights (the loss stays finite: ReLU maps NaN to 0) are never saved."""
    monkeypatch.setattr(logging.getLogger("nntrain"), "handlers", [])  # log to this test's captured stderr
    x, y = _images()
    x[5, 0, 0, 0] = np.nan
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "train", "--experiment=mnist_mlp", f"--model_dir={run}", "--config.train.epochs=2",
                 "--config.train.batch_size=4", "--config.data.check=false", _npz(tmp_path / "nan.npz", x, y)])
    err = capfd.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]
    assert exit_info.value.code == 1 and "Traceback" not in err
    assert len(errors) == 1 and "NaN/inf value(s): training stopped" in errors[0], errors
    assert f"{run}/checkpoints/step-" in errors[0]  # stopped at the first save, the checkpoint of epoch 1
    assert not (run / "model.keras").exists() and not list(run.glob("checkpoints/*.keras"))


def test_memory_estimate_above_the_host_is_refused_before_training(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(guards, "host_memory_bytes", lambda: 100)
    with pytest.raises(SystemExit):
        cli.run(["nntrain", "train", *XOR, f"--model_dir={tmp_path / 'run'}"])
    err = capfd.readouterr().err.strip().splitlines()
    assert err[-1].startswith("nntrain: error: train.batch_size: ~") and "0.0 GiB" in err[-1]
    assert not (tmp_path / "run").exists()


@pytest.mark.fast
def test_host_memory_is_positive_and_bounded_by_physical_memory():
    physical = guards.os.sysconf("SC_PAGE_SIZE") * guards.os.sysconf("SC_PHYS_PAGES")
    assert 0 < guards.host_memory_bytes() <= physical


@pytest.mark.fast
def test_writable_check_passes_where_it_can_write_and_leaves_nothing(tmp_path):
    rundir.check(str(tmp_path / "a" / "b"))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(NntrainError, match="'/proc/x/y' is not writable"):
        rundir.check("/proc/x/y")


def _stderr_lines_until_exit(process: subprocess.Popen, timeout: float,
                             port: int) -> tuple[list[str], dict[str, float], set[str]]:
    """The process's stderr lines, when (time.monotonic()) the first line holding each key phrase came, and the
    addresses listening on `port` while the process waited."""
    lines, seen, listening = [], {}, set()
    reader = threading.Thread(target=lambda: [_note(line, lines, seen) for line in process.stderr], daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        if "waits up to" in seen and not listening:
            listening = _listening(port)
        time.sleep(0.1)
    process.wait(timeout=max(1.0, deadline - time.monotonic()))
    reader.join(timeout=10)
    return lines, seen, listening


def _note(line: str, lines: list[str], seen: dict[str, float]) -> None:
    lines.append(line.rstrip("\n"))
    for phrase in ("waits up to", "nntrain: error:"):
        if phrase in line and phrase not in seen:
            seen[phrase] = time.monotonic()


@pytest.mark.slow
def test_a_lone_multi_worker_process_gives_up_after_worker_timeout_in_one_line(tmp_path):
    timeout = 5
    ports = launch.free_ports(2)
    hosts = ",".join(f"127.0.0.1:{port}" for port in ports)
    process = subprocess.Popen([sys.executable, "-m", "nntrain.cli", "train", *XOR, f"--model_dir={tmp_path / 'mw'}",
                                f"--worker_hosts={hosts}", "--task_index=0", f"--worker_timeout={timeout}"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        lines, seen, listening = _stderr_lines_until_exit(process, timeout=120, port=ports[0])
    finally:
        process.kill()
        process.wait(timeout=30)
    errors = [line for line in lines if "error" in line.lower()]
    assert process.returncode == 1  # ended by faulthandler after its watcher's line (no longer SIGKILL: -9)
    assert errors == [f"nntrain: error: worker 0: not every worker of {hosts} joined within --worker_timeout=5 s: "
                      "start each with the same command and its own --task_index (TensorFlow's log: "
                      f"{tempfile.gettempdir()}/nntrain-tensorflow-{process.pid}.log)"], lines
    assert "Traceback" not in "\n".join(lines)
    assert timeout - 1 <= seen["nntrain: error:"] - seen["waits up to"] <= timeout + 10
    assert not (tmp_path / "mw").exists()
    # TensorFlow's gRPC server binds every interface, as the start-up line says.
    assert listening and listening <= {"0.0.0.0", "::"}, listening
    assert any(f"listens on every interface at port {ports[0]}" in line for line in lines)
    Path(tempfile.gettempdir(), f"nntrain-tensorflow-{process.pid}.log").unlink(missing_ok=True)


def _listening(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port`, read from /proc/net/tcp and tcp6."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            host, _, hex_port = local.partition(":")
            if state == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(host)
                words = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))  # little-endian 32-bit words
                address = ipaddress.ip_address(words)
                addresses.add(str(getattr(address, "ipv4_mapped", None) or address))  # ::ffff:127.0.0.1 is IPv4
    return addresses


def test_the_tuner_oracle_listens_on_loopback_only(tmp_path):
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1, seed=1)
    oracle._set_project_dir(str(tmp_path), "search")
    port = launch.free_ports(1)[0]
    seen: list[set[str]] = []

    def look() -> None:
        deadline = time.monotonic() + 20
        while not seen[-1:] and time.monotonic() < deadline:
            if found := _listening(port):
                seen.append(found)
            time.sleep(0.05)

    watcher = threading.Thread(target=look, daemon=True)
    watcher.start()
    with pytest.raises(distributed.SearchIncomplete):
        distributed.serve(oracle, "127.0.0.1", port, worker_timeout=1.0, on_trial_end=print)
    watcher.join(timeout=30)
    assert seen == [{"127.0.0.1"}]


def test_the_data_service_start_up_line_says_where_it_listens():
    local = service.start(port=0, workers=1)
    try:
        port = int(local.address.rpartition(":")[2])
        bound = _listening(port)
    finally:
        local.stop()
    assert bound and bound <= {"0.0.0.0", "::"}, bound  # every interface: TensorFlow offers no narrower bind
    assert "every interface" in service.LISTENS and "private network" in service.LISTENS


def test_a_tune_worker_whose_chief_stops_answering_exits_after_worker_timeout(monkeypatch):
    exits: list[tuple[float, str]] = []
    monkeypatch.setattr(distributed.watchdog, "exit_now", lambda message: exits.append((time.monotonic(), message)))
    start = time.monotonic()
    with distributed.Heartbeat("127.0.0.1", closed_port(), "w1", interval=0.2, timeout=1.0):
        while not exits and time.monotonic() - start < 20:
            time.sleep(0.05)
    assert exits, "the worker never gave up"
    assert 1.0 <= exits[0][0] - start <= 1.0 + 10
    assert "worker w1: the chief at 127.0.0.1:" in exits[0][1] and "(--worker_timeout)" in exits[0][1]


def test_native_stderr_goes_to_a_file_while_python_stderr_stays(tmp_path):
    """In a child process (fd 2 is process-wide): C-level writes to fd 2 land in the file, sys.stderr and the
    nntrain logger still reach the original stderr."""
    code = ("import os, sys; from nntrain import quiet; from nntrain.logs import log; log('before'); "
            f"quiet.native_stderr_to_file({str(tmp_path / 'tf.log')!r}); os.write(2, b'C++ record\\n'); "
            "log('after'); print('python line', file=sys.stderr)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "before" in result.stderr and "after" in result.stderr and "python line" in result.stderr
    assert "C++ record" not in result.stderr
    assert (tmp_path / "tf.log").read_text() == "C++ record\n"


def test_data_checks_read_examples_of_varying_shape(data_config):
    images = tf.data.Dataset.from_generator(
        lambda: ((np.full((n, 2, 1), np.inf if n == 3 else 0.5, np.float32), 1) for n in (1, 2, 3)),
        output_signature=(tf.TensorSpec((None, 2, 1), tf.float32), tf.TensorSpec((), tf.int64)))
    with pytest.raises(NntrainError, match="1 example\\(s\\) have NaN or infinite features, the first at index 2"):
        checks.check_splits(data_config, "tfds:shapes", 2, Split(images, 3), None, 1)


@pytest.mark.fast
def test_data_checks_of_an_in_memory_source_read_its_arrays(data_config):
    """An in-memory split is checked on its arrays, not by a pass through tf.data (its dataset is emptied here):
    a NaN in the second part of `train+test` is found at its index in the split, after the train part."""
    x, y = np.zeros((6, 2), np.float32), np.zeros(6, np.int64)
    x_test = x[:4].copy()
    x_test[2, 1] = np.nan
    source = sources._in_memory("npz:mem", {"train": (x, y), "test": (x_test, y[:4])})
    split = source.select("train[2:]+test")
    with pytest.raises(NntrainError, match="1 example\\(s\\) have NaN or infinite features, the first at index 6"):
        checks.check_splits(data_config, source.name, source.num_classes,
                            dataclasses.replace(split, dataset=split.dataset.take(0)), None, 1)


def test_a_resume_that_meets_nan_weights_leaves_the_run_as_it_was(tmp_path, capfd):
    """NaN pixels with data checks off: the loss stays finite, the first save refuses the weights, and config.json
    and metrics.jsonl of the earlier run are hash-identical afterwards (checkpoints of finite steps may be added)."""
    x, y = _images()
    run = tmp_path / "run"
    train = ["nntrain", "train", "--experiment=mnist_mlp", f"--model_dir={run}", "--config.train.batch_size=4",
             "--config.data.check=false"]
    with pytest.raises(SystemExit) as first:
        cli.run([*train, "--config.train.epochs=1", _npz(tmp_path / "good.npz", x, y)])
    assert first.value.code in (0, None)
    before = {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in ("config.json", "metrics.jsonl")}
    x[5, 0, 0, 0] = np.nan
    with pytest.raises(SystemExit) as second:
        cli.run([*train, "--config.train.epochs=2", _npz(tmp_path / "good.npz", x, y)])  # same path, now NaN
    err = capfd.readouterr().err
    assert second.value.code == 1 and "Traceback" not in err and "NaN/inf value(s)" in err
    assert {name: hashlib.sha256((run / name).read_bytes()).hexdigest() for name in before} == before
