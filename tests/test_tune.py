"""Hyperparameter search: every tuner, batch-size tuning, resume, failed trials, distributed search, finders."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import h5py
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from corpora import TINY_GPT
from google.protobuf import json_format
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_client
from tensorboard.plugins.hparams import metadata as hparams_metadata

import nntrain
from nntrain.distribute import launch
from nntrain.tuning import distributed, search_space, tuners
from nntrain.tuning.hypermodel import HyperModel
from nntrain.tuning.search_space import choice, float_range, layers, log_range

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
XOR = {"train.steps_per_epoch": 5, "train.epochs": 1}
TINY_MNIST = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:512]",
              "data.eval_split": "test[9000:9512]", "model.hidden_sizes": "32", "train.epochs": 2}


def _results(model_dir: Path) -> dict:
    return json.loads((model_dir / "results.json").read_text())


def _tags(log_dir: Path, pattern: str) -> set[str]:
    """The summary tags in the event files that `pattern` matches under log_dir."""
    tags = set()
    for path in log_dir.glob(pattern):
        for record in tf.data.TFRecordDataset(str(path)):
            tags |= {value.tag for value in tf.compat.v1.Event.FromString(record.numpy()).summary.value}
    return tags


@pytest.fixture
def progress(monkeypatch) -> list[str]:
    """The progress lines the tuners log."""
    lines: list[str] = []
    monkeypatch.setattr(tuners, "log", lines.append)
    return lines


@pytest.mark.parametrize("tuner", ["random", "bayesian", "hyperband", "grid"])
def test_each_tuner_runs_distinct_trials_on_xor(tmp_path, tuner, progress):
    overrides = {**XOR, "train.epochs": 3} if tuner == "hyperband" else XOR
    result = nntrain.tune("xor", str(tmp_path), overrides, strategy="cpu", tuner=tuner, max_trials=2, verbose=False)
    trials = result["trials"]
    assert len(trials) == 2 and all(t["status"] == "completed" for t in trials), trials
    assert len({json.dumps(t["hyperparameters"], sort_keys=True) for t in trials}) == 2
    assert [t["trial"] for t in trials] == [result["best_trial"], *[t["trial"] for t in trials[1:]]]
    assert trials[0]["score"] <= trials[1]["score"]  # val_loss: lower is better, best first
    if tuner == "hyperband":  # Hyperband's epochs reach model.fit through HyperModel.fit's **kwargs
        assert all(t["epochs"] == t["hyperparameters"]["tuner/epochs"] < 3 for t in trials)
    if tuner == "grid":  # the grid starts at the experiment's own values
        first = next(t for t in trials if t["trial"] == "0")
        assert first["settings"]["model.hidden_sizes"] == [8] and first["settings"]["train.batch_size"] == 4
    done = [line for line in progress if " -> val_loss=" in line]
    assert len(done) == 2 and done[0].startswith("trial 0 (1/2): batch_size=") and "best so far" in done[1]
    with open(tmp_path / "results.csv") as f:
        assert [row["trial"] for row in csv.DictReader(f)] == [t["trial"] for t in trials]
    assert _tags(tmp_path / "logs", "events.out.tfevents.*") == {"_hparams_/experiment"}  # the config, once
    assert "_hparams_/session_start_info" in _tags(tmp_path / "logs", "*/execution0/events.out.tfevents.*")


def test_batch_size_sets_steps_and_scales_lr_and_best_config_retrains(tmp_path):
    space = {"train.batch_size": choice(128, 32), "optimizer.learning_rate": choice(1e-3, 3e-3)}
    model_dir = tmp_path / "search"
    result = nntrain.tune("mnist_mlp", str(model_dir), TINY_MNIST, search_space=space, strategy="cpu",
                          tuner="grid", max_trials=3, objective="val_accuracy", verbose=False)
    trials = {t["trial"]: t for t in result["trials"]}
    assert {t["settings"]["train.batch_size"] for t in trials.values()} == {32, 128}
    for t in trials.values():
        batch = t["settings"]["train.batch_size"]
        assert t["steps_per_epoch"] == math.ceil(512 / batch)
        scaled = t["base_learning_rate"] * math.sqrt(batch / 128)
        assert t["settings"]["optimizer.learning_rate"] == pytest.approx(scaled)
        assert t["hyperparameters"]["base_learning_rate"] == t["base_learning_rate"]  # keras-tuner's and HParams' name
        assert t["lr_rule"] == "sqrt"
    best = result["trials"][0]
    assert result["command"] == f"nntrain train --experiment={model_dir}/best_config.py --model_dir={model_dir}/best"
    config = nntrain.load_config(result["best_config"])
    assert config.optimizer.learning_rate == best["settings"]["optimizer.learning_rate"]
    retrained = nntrain.train(config, str(tmp_path / "best"), strategy="cpu", verbose=0)
    assert abs(retrained["val_accuracy"] - best["score"]) <= 0.02, (retrained, best)


def test_resume_after_a_kill_runs_only_unfinished_trials(tmp_path, monkeypatch):
    fitted: list[str] = []
    real_fit = HyperModel.fit

    def fit(self, hp, model, **kwargs):
        fitted.append(self.trial(hp.values).base_learning_rate)
        if len(fitted) == 2 and kill:
            raise KeyboardInterrupt  # what Ctrl-C or a kill does mid-trial: keras-tuner does not catch it
        return real_fit(self, hp, model, **kwargs)

    monkeypatch.setattr(HyperModel, "fit", fit)
    kill = True
    with pytest.raises(KeyboardInterrupt):
        nntrain.tune("xor", str(tmp_path), XOR, strategy="cpu", max_trials=2, verbose=False)
    with pytest.raises(nntrain.NntrainError, match="already holds a search: pass --resume"):
        nntrain.tune("xor", str(tmp_path), XOR, strategy="cpu", max_trials=2, verbose=False)
    with pytest.raises(nntrain.NntrainError, match="used another tuner"):
        nntrain.tune("xor", str(tmp_path), XOR, strategy="cpu", tuner="grid", max_trials=2, resume=True)
    kill = False
    result = nntrain.tune("xor", str(tmp_path), XOR, strategy="cpu", max_trials=2, resume=True, verbose=False)
    assert len(fitted) == 3 and fitted[2] == fitted[1]  # only the interrupted trial ran again, not the first
    assert sorted(t["trial"] for t in result["trials"]) == ["0", "1"]
    assert all(t["status"] == "completed" for t in result["trials"])


def test_failed_and_diverging_trials_do_not_stop_the_search(tmp_path, progress):
    space = {"optimizer.learning_rate": choice(3e-3, 1e30), "model.activation": choice("gelu", "bogus")}
    result = nntrain.tune("quadratic", str(tmp_path), {"train.steps_per_epoch": 5, "train.epochs": 1},
                          search_space=space, strategy="cpu", tuner="grid", max_trials=3, verbose=False)
    by_settings = {(t["settings"]["optimizer.learning_rate"], t["settings"]["model.activation"]): t
                   for t in result["trials"]}
    assert by_settings[(3e-3, "gelu")]["status"] == "completed"
    assert result["best_trial"] == by_settings[(3e-3, "gelu")]["trial"]
    diverged = by_settings[(1e30, "gelu")]
    assert diverged["status"] == "failed" and "NaN/inf" in diverged["error"]
    broken = by_settings[(3e-3, "bogus")]
    assert broken["status"] == "failed" and "config.model.activation='bogus'" in broken["error"]
    assert any("-> failed: FailedTrialError: loss became NaN/inf" in line for line in progress)
    assert (tmp_path / "best_config.py").is_file()


@pytest.mark.fast
def test_search_space_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(nntrain.NntrainError, match="unknown config key 'model.hiden_sizes'"):
        nntrain.tune("xor", str(tmp_path), search_space={"model.hiden_sizes": layers((1,), (8,))}, strategy="cpu")
    with pytest.raises(nntrain.NntrainError, match="--objective=val_acc is not a metric"):
        nntrain.tune("xor", str(tmp_path), search_space={"optimizer.learning_rate": log_range(1e-3, 1e-1)},
                     strategy="cpu", objective="val_acc")
    with pytest.raises(nntrain.NntrainError, match="one type"):
        choice(1, "a")
    assert not any(tmp_path.iterdir())  # nothing written before everything was checked


@pytest.mark.fast
def test_every_experiment_declares_a_valid_search_space():
    from nntrain import config as nn_config

    for name in nn_config.experiment_names():
        space = search_space.load(name)
        search_space.validate(space, nn_config.resolve(name))
        assert {"train.batch_size", "optimizer.learning_rate"} <= set(space), name


def random_oracle(tmp_path: Path, max_trials: int) -> keras_tuner.Oracle:
    """A chief's oracle searching x in [0, 1] for val_loss, its state in tmp_path."""
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=max_trials, seed=1)
    oracle._set_project_dir(str(tmp_path), "search")
    hp = keras_tuner.HyperParameters()
    hp.Float("x", 0.0, 1.0)
    oracle.update_space(hp)
    return oracle


def test_chief_requeues_a_silent_workers_trial_and_gives_up_when_no_worker_is_left(tmp_path):
    oracle = random_oracle(tmp_path, max_trials=3)
    port = launch.free_ports(1)[0]

    def worker_that_dies():  # asks for one trial, then never heartbeats again
        channel = distributed.grpc.insecure_channel(f"127.0.0.1:{port}")
        stub = protos.get_service_grpc().OracleStub(channel)
        stub.CreateTrial(protos.get_service().CreateTrialRequest(tuner_id="w1"), wait_for_ready=True, timeout=20)
        channel.close()

    threading.Thread(target=worker_that_dies, daemon=True).start()
    start = time.monotonic()
    # 3 s leaves the worker thread time to connect on a loaded machine (1 s made this test flaky).
    with pytest.raises(distributed.SearchIncomplete, match="no worker heard from for 3 s"):
        distributed.serve(oracle, "127.0.0.1", port, worker_timeout=3.0, on_trial_end=print)
    assert time.monotonic() - start < 5.5  # the timeout once (it was counted twice: >= 6 s), plus start-up
    assert oracle._retry_queue == ["0"] and not oracle.ongoing_trials and not oracle.tuner_ids


def test_a_worker_with_nothing_to_start_waits_and_runs_the_trial_of_a_worker_that_went_silent(tmp_path):
    """keras-tuner tells a worker to stop once every trial has started, even while another worker's trial runs; when
    that worker then died, its trial came back to the queue with no worker left (a 3-host search ended with 3 of 4
    trials). The chief tells it to wait instead, and hands it the silent worker's trial."""
    oracle = random_oracle(tmp_path, max_trials=2)
    port = launch.free_ports(1)[0]
    answers = []

    def workers():  # w1 takes a trial and goes silent; w2 runs the other, waits, then runs w1's
        with distributed.worker_environment("127.0.0.1", port, "w2", rpc_timeout=20):
            client = distributed.PacedClient(oracle_client.OracleClient(oracle))
            first = client.create_trial("w1")
            answers.append(("w1", first.trial_id, first.status))
            while (trial := client.create_trial("w2")).status != "STOPPED":
                answers.append(("w2", trial.trial_id, trial.status))
                if trial.status == "RUNNING":
                    client.update_trial(trial.trial_id, {"val_loss": 0.5})
                    trial.status = "COMPLETED"
                    client.end_trial(trial)

    thread = threading.Thread(target=workers, daemon=True)
    start = time.monotonic()
    thread.start()
    distributed.serve(oracle, "127.0.0.1", port, worker_timeout=2.0, on_trial_end=print)  # returns: search done
    thread.join(timeout=20)
    assert not thread.is_alive()
    statuses = [status for _, _, status in answers]
    assert [answer[:2] for answer in answers if answer[2] == "RUNNING"] == [("w1", "0"), ("w2", "1"), ("w2", "0")]
    assert statuses[:2] == ["RUNNING", "RUNNING"] and statuses[-1] == "RUNNING"  # waits between its two trials
    waited = time.monotonic() - start
    assert 3 <= statuses.count("IDLE") <= waited / distributed._POLL_S + 1  # paced: every 0.2 s, not at once
    assert sorted(oracle.end_order) == ["0", "1"]
    assert all(t.status == "COMPLETED" for t in oracle.trials.values())


@pytest.mark.slow
def test_chief_and_two_workers_run_each_trial_exactly_once(tmp_path):
    """Two `nntrain tune --role=worker` processes and a chief (here, in the test's process) on 127.0.0.1."""
    address = f"127.0.0.1:{launch.free_ports(1)[0]}"
    worker = [sys.executable, "-m", "nntrain.cli", "tune", "--experiment=xor", f"--model_dir={tmp_path}",
              "--strategy=cpu", "--max_trials=4", "--config.train.steps_per_epoch=5", "--config.train.epochs=1",
              f"--oracle_address={address}", "--worker_timeout=120", "--role=worker"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    logs = [tmp_path / f"w{i}.log" for i in (1, 2)]
    with logs[0].open("w") as log1, logs[1].open("w") as log2:
        workers = [subprocess.Popen([*worker, f"--worker_id=w{i}"], cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                                    stderr=log) for i, log in ((1, log1), (2, log2))]
    try:
        result = nntrain.tune("xor", str(tmp_path), {"train.steps_per_epoch": 5, "train.epochs": 1}, strategy="cpu",
                              max_trials=4, role="chief", oracle_address=address, worker_timeout=120, verbose=False)
        for process in workers:
            process.wait(timeout=60)
    finally:
        for process in workers:
            process.kill()
    ran = []
    for log, process in zip(logs, workers, strict=True):
        log_text = log.read_text()
        assert process.returncode == 0, log_text[-3000:]
        done = [line for line in log_text.splitlines() if ": done, ran trial(s) " in line]
        ran += [t for t in done[0].split("ran trial(s) ")[1].split(", ") if t != "none"]
    assert sorted(ran) == ["0", "1", "2", "3"]  # every trial, each by exactly one worker
    assert sorted(t["trial"] for t in result["trials"]) == ["0", "1", "2", "3"]
    assert all(t["status"] == "completed" for t in result["trials"])


def test_find_batch_size_and_find_lr_on_mnist_mlp(tmp_path):
    config = nntrain.load_config("mnist_mlp", {**TINY_MNIST, "data.train_split": "test[:1024]"})
    found = nntrain.find_batch_size(config, strategy="cpu", max_batch_size=32, num_steps=4)
    sizes = [r["batch_size"] for r in found["rows"]]
    assert sizes == [16, 32]
    assert [r["steps_per_epoch"] for r in found["rows"]] == [1024 // b for b in sizes]
    assert all(r["examples_per_second"] > 0 for r in found["rows"]) and found["recommended"] in sizes

    lr = nntrain.find_lr(config, str(tmp_path), strategy="cpu", min_lr=1e-5, max_lr=1.0, num_steps=30)
    with open(tmp_path / "lr_range.csv") as f:
        rows = list(csv.DictReader(f))
    rates = [float(r["learning_rate"]) for r in rows]
    assert rates[0] == pytest.approx(1e-5) and all(a < b for a, b in zip(rates, rates[1:], strict=False))
    assert len(rows) == lr["steps"] <= 30
    assert (tmp_path / "lr_range.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert 1e-5 <= lr["low"] < lr["high"] <= 1.0


def _trial_hparams(log_dir: Path) -> dict[str, dict]:
    """The HParams each trial's TensorBoard events hold (keras-tuner writes them into logs/<trial>/execution0)."""
    found = {}
    for path in log_dir.glob("*/execution0/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag == hparams_metadata.SESSION_START_INFO_TAG:
                    info = hparams_metadata.parse_session_start_info_plugin_data(value.metadata.plugin_data.content)
                    found[path.parent.parent.name] = json_format.MessageToDict(info)["hparams"]
    return found


@pytest.mark.slow
def test_stepped_floats_are_declared_values_everywhere(tmp_path, progress):
    """keras-tuner's stepped Float(0.2, 0.4, step=0.1) makes 0.2 + 0.1 = 0.30000000000000004; every place a trial's
    values appear (trial state, HParams, results, best_config.py, progress lines) holds the grid as declared."""
    grid = [0.2, 0.3, 0.4]
    space = {"optimizer.momentum": float_range(0.2, 0.4, step=0.1)}
    result = nntrain.tune("xor", str(tmp_path), {**XOR, "optimizer.name": "sgd"}, search_space=space, strategy="cpu",
                          tuner="grid", max_trials=4, objective="val_loss", verbose=False)
    trials = json.loads((tmp_path / "results.json").read_text())["trials"]
    assert sorted(t["hyperparameters"]["optimizer.momentum"] for t in trials) == grid  # == compares exactly
    assert sorted(t["settings"]["optimizer.momentum"] for t in trials) == grid
    hparams = _trial_hparams(tmp_path / "logs")
    assert sorted(hparams) == sorted(t["trial"] for t in trials)
    assert sorted(h["optimizer.momentum"] for h in hparams.values()) == grid
    trial_files = (tmp_path / "search").glob("trial_*/trial.json")
    assert sorted(json.loads(f.read_text())["hyperparameters"]["values"]["optimizer.momentum"]
                  for f in trial_files) == grid
    raw = "0.30000000000000004"
    assert raw not in (tmp_path / "results.csv").read_text() and not any(raw in line for line in progress)
    assert any("momentum=0.3 " in line for line in progress)
    best = next(t for t in result["trials"] if t["trial"] == result["best_trial"])
    value = best["settings"]["optimizer.momentum"]  # never the base config's 0.9, so best_config.py sets it
    assert f"config.optimizer.momentum = {value!r}\n" in (tmp_path / "best_config.py").read_text()
    with pytest.raises(nntrain.NntrainError, match=r"float_range\(0.2, 0.4, step=0\): step must be > 0"):
        float_range(0.2, 0.4, step=0)


def test_find_batch_size_keeps_ten_steps_per_epoch(monkeypatch):
    """On 8,000 examples with throughput that always grows, the search stops at 512 (15 steps per epoch), not 4096."""
    from nntrain.tuning import find_batch_size

    monkeypatch.setattr(find_batch_size, "_throughput", lambda config, strategy, steps: (
        float(config.train.batch_size), 8000 // config.train.batch_size, 8000))
    found = find_batch_size.find_batch_size(nntrain.load_config("mnist_mlp"), SimpleNamespace(num_replicas_in_sync=1))
    assert [row["batch_size"] for row in found["rows"]] == [16, 32, 64, 128, 256, 512]
    assert found["recommended"] == 512
    assert found["stopped"] == ("the next batch size 1024 leaves fewer than 10 steps per epoch of the 8000 train "
                                "examples")


def _kernels(weights_file: Path) -> dict[str, np.ndarray]:
    """The Dense kernels in a keras-tuner trial checkpoint (`.weights.h5`), by layer path."""
    kernels = {}
    with h5py.File(weights_file, "r") as f:
        f.visititems(lambda name, item: kernels.__setitem__(name, item[()])
                     if isinstance(item, h5py.Dataset) and "dense" in name and item.ndim == 2 else None)
    return kernels


def test_a_trial_prunes_like_a_run_and_saves_the_pruned_kernels(tmp_path):
    """The callbacks of a trial come from run.callbacks.callbacks_for, as a run's do: its Prune callback too."""
    overrides = {**TINY_MNIST, "train.epochs": 1, "prune.target_sparsity": 0.8}
    result = nntrain.tune("mnist_mlp", str(tmp_path), overrides, search_space={"model.hidden_sizes": choice(32)},
                          strategy="cpu", tuner="grid", max_trials=1, verbose=False)
    assert [t["status"] for t in result["trials"]] == ["completed"]
    assert any(name.startswith("sparsity/") for name in result["trials"][0]["metrics"]), result["trials"][0]
    [checkpoint] = (tmp_path / tuners.PROJECT).glob("trial_*/checkpoint.weights.h5")
    kernels = _kernels(checkpoint)
    assert len(kernels) == 2, kernels.keys()  # hidden and output layer
    for name, kernel in kernels.items():
        assert np.mean(kernel == 0) >= 0.79, (name, np.mean(kernel == 0))


def test_a_text_gpt_trial_logs_bits_per_byte(tmp_path):
    overrides = {**TINY_GPT, "train.epochs": 1}
    result = nntrain.tune("text_gpt", str(tmp_path), overrides, search_space={"model.num_heads": choice(2)},
                          strategy="cpu", tuner="grid", max_trials=1, verbose=False)
    [trial] = result["trials"]
    assert trial["status"] == "completed", trial
    metrics = trial["metrics"]
    assert metrics["val_bits_per_byte"] == pytest.approx(metrics["val_loss"] / math.log(2)), metrics
