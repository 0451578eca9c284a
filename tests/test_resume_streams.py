"""File-streaming sources resume bit-identical after a real stop: an `images:DIR` folder of PNGs (file order
shuffled anew every pass, random-resized-crop and flip) and `tfrecord:DIR` shards written by `nntrain convert` (files
shuffled anew and interleaved every pass), stopped by SIGTERM mid-epoch or SIGKILLed after a step checkpoint;
streamed from the files (data.cache=false) or from the memory cache (data.cache=auto for a split this small), with a
data.shuffle_buffer that holds a whole pass or less; and two workers on 127.0.0.1 streaming their own shards, SIGTERM
to one of them (the multi-worker exact-resume test: tests/test_multi_worker.py has the lost peer and the relaunch).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import keras
import local_workers
import numpy as np
import pytest
import tensorflow as tf
from test_data_sources import write_pngs

from nntrain.config import base_config
from nntrain.data import convert, idx, pipeline
from nntrain.run import bundles

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
TRAIN_IMAGES, BATCH, EPOCHS, CHECKPOINT_EVERY = 640, 8, 2, 10
STEPS = TRAIN_IMAGES // BATCH  # per epoch, one pass
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not MNIST_DIR.is_dir(), reason=f"no MNIST IDX files in {MNIST_DIR}")]


def _train_args(source: str, cache: str, strategy: str = "cpu") -> list[str]:
    return ["train", "--experiment=mnist_mlp", f"--strategy={strategy}", f"--config.data.source={source}",
            "--config.data.train_split=train", "--config.data.eval_split=test", "--config.model.hidden_sizes=(16,)",
            "--config.model.dropout=0.2", "--config.data.augment=random_resized_crop", f"--config.data.cache={cache}",
            f"--config.train.batch_size={BATCH}", f"--config.train.epochs={EPOCHS}",
            "--config.train.steps_per_execution=1", "--config.train.tensorboard=false",
            f"--config.train.checkpoint_every_steps={CHECKPOINT_EVERY}"]


@pytest.fixture(scope="module")
def pngs(tmp_path_factory) -> Path:
    """MNIST test images as PNGs: TRAIN_IMAGES in train/<class>/, 64 in test/<class>/."""
    images, labels = idx.load(str(MNIST_DIR))["test"]
    root = tmp_path_factory.mktemp("pngs")
    write_pngs(root / "train", images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES])
    write_pngs(root / "test", images[8000:8064], labels[8000:8064])
    return root


@pytest.fixture(scope="module")
def records(pngs, tmp_path_factory) -> Path:
    """`pngs` as `nntrain convert` writes them: 4 shards per split and metadata.json."""
    output = tmp_path_factory.mktemp("records") / "records"
    config = base_config().data
    config.source = f"images:{pngs}"
    convert.convert(config, ["train", "test"], str(output), 4)
    return output


def _source(kind: str, request: pytest.FixtureRequest) -> str:
    return f"{kind}:{request.getfixturevalue('pngs' if kind == 'images' else 'records')}"


def _start(args: list[str], model_dir: Path, log: Path) -> subprocess.Popen:
    with open(log, "a") as stderr:  # a file, not a pipe: nobody reads while training runs
        return subprocess.Popen([sys.executable, "-m", "nntrain.cli", *args, f"--model_dir={model_dir}"], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=stderr)


def _run(args: list[str], model_dir: Path, log: Path) -> None:
    process = _start(args, model_dir, log)
    assert process.wait(timeout=120) == 0, log.read_text()[-3000:]


def _step(model_dir: Path) -> int:
    try:
        return json.loads((model_dir / "checkpoints" / "state.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


def _wait_for_step(model_dir: Path, step: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while _step(model_dir) < step and process.poll() is None and time.time() < deadline:
        time.sleep(0.01)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Callable[[str, str, pytest.FixtureRequest], Callable[[], Path]]:
    """Starts an uninterrupted run of (source kind, data.cache) on first use, to run alongside the test's own runs;
    gives a function that waits for it to finish and returns its model directory."""
    runs: dict[tuple[str, str], tuple[subprocess.Popen, Path]] = {}

    def start(kind: str, cache: str, request: pytest.FixtureRequest) -> Callable[[], Path]:
        if (kind, cache) not in runs:
            model_dir = tmp_path_factory.mktemp(f"reference-{kind}-{cache}") / "run"
            args = _train_args(_source(kind, request), cache)
            runs[kind, cache] = _start(args, model_dir, _log(model_dir)), model_dir
        process, model_dir = runs[kind, cache]

        def finished() -> Path:
            assert process.wait(timeout=240) == 0, _log(model_dir).read_text()[-3000:]
            return model_dir

        return finished

    return start


def _log(model_dir: Path) -> Path:
    return model_dir.parent / "log"


def _assert_identical(model_dir: Path, reference: Callable[[], Path]) -> None:
    """The run in `model_dir` logged both epochs and ends with the weights of `reference` (when it finishes)."""
    assert [json.loads(line)["epoch"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    resumed, expected = (keras.saving.load_model(d / "model.keras").get_weights() for d in (model_dir, reference()))
    difference = max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, expected, strict=True))
    assert difference == 0, f"resumed weights differ from the uninterrupted run's by up to {difference}"


@pytest.mark.parametrize("kind, cache", [("images", "auto"), ("images", "false"), ("tfrecord", "false")])
def test_sigterm_mid_epoch_resumes_exactly(kind, cache, uninterrupted, tmp_path, request):
    """SIGTERM in epoch 2 (the stream is past a whole pass): the run saves that step, and resumed it ends with the
    uninterrupted run's weights, bit for bit."""
    args, model_dir, log = _train_args(_source(kind, request), cache), tmp_path / "run", tmp_path / "log"
    reference = uninterrupted(kind, cache, request)
    process = _start(args, model_dir, log)
    _wait_for_step(model_dir, STEPS + CHECKPOINT_EVERY, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143, log.read_text()[-3000:]
    stopped = re.findall(r"stopped by SIGTERM after step (\d+), saved to ", log.read_text())
    assert stopped and STEPS < int(stopped[-1]) < EPOCHS * STEPS, log.read_text()[-3000:]
    _run(args, model_dir, log)
    assert f"resuming from the checkpoint in {model_dir}/checkpoints: step {stopped[-1]} of" in log.read_text()
    _assert_identical(model_dir, reference)


def test_sigkill_resumes_tfrecords_exactly_from_a_step_checkpoint(uninterrupted, tmp_path, request):
    """SIGKILL in epoch 2: the resume starts at the last step checkpoint and ends with the uninterrupted weights."""
    args, model_dir, log = _train_args(_source("tfrecord", request), "false"), tmp_path / "run", tmp_path / "log"
    reference = uninterrupted("tfrecord", "false", request)
    process = _start(args, model_dir, log)
    _wait_for_step(model_dir, STEPS + CHECKPOINT_EVERY, process)
    process.kill()
    process.wait(timeout=60)
    killed_at = _step(model_dir)
    assert STEPS < killed_at < EPOCHS * STEPS and killed_at % CHECKPOINT_EVERY == 0, f"killed at step {killed_at}"
    _run(args, model_dir, log)
    assert f"resuming from the checkpoint in {model_dir}/checkpoints: step {killed_at} of" in log.read_text()
    _assert_identical(model_dir, reference)


def test_two_workers_streaming_their_own_shards_resume_exactly_after_sigterm_to_one(tmp_path, request):
    """Two workers on 127.0.0.1, each streaming its own 2 of the 4 train shards (augmented); SIGTERM to worker 1 in
    epoch 2: both save the same step and exit 143, and relaunched they end with the weights of an uninterrupted
    2-worker run (run alongside), bit for bit."""
    args = _train_args(_source("tfrecord", request), "false", strategy="multi_worker")
    reference = local_workers.launched(args, tmp_path / "reference", tmp_path / "reference.log")
    model_dir, logs = tmp_path / "run", [tmp_path / f"worker{index}.log" for index in range(2)]
    started = local_workers.start(args, model_dir, logs)
    codes = local_workers.sigterm_one(started, lambda: _step(model_dir) >= STEPS + CHECKPOINT_EVERY)
    assert codes == [143, 143], [log.read_text()[-3000:] for log in logs]
    stopped_at = _step(model_dir)
    assert stopped_at == _step(model_dir / "workers" / "1") and STEPS < stopped_at < EPOCHS * STEPS, stopped_at
    for index, log in enumerate(logs):
        assert f"input pipeline {index} of 2 reads 2 of the 4 files of split 'train'" in log.read_text()
        assert f"stopped by SIGTERM after step {stopped_at}, saved to " in log.read_text()
    resumed = local_workers.launched(args, model_dir, tmp_path / "resumed.log")
    assert resumed.wait(timeout=180) == 0, (tmp_path / "resumed.log").read_text()[-3000:]
    resuming = f"resuming from the checkpoint in {model_dir}/checkpoints: step {stopped_at} of"
    for index in range(2):  # both workers, each line prefixed by the launcher
        assert any(line.startswith(f"[worker {index}] ") and resuming in line
                   for line in (tmp_path / "resumed.log").read_text().splitlines())
    last = f"checkpoints/step-{EPOCHS * STEPS}"
    mine, theirs = (bundles.load(str(d / last)) for d in (model_dir, model_dir / "workers" / "1"))
    assert mine.keys() == theirs.keys()
    for name in mine:  # weights, optimizer state and RNG states alike
        np.testing.assert_array_equal(mine[name], theirs[name])

    def finished() -> Path:
        assert reference.wait(timeout=180) == 0, (tmp_path / "reference.log").read_text()[-3000:]
        return tmp_path / "reference"

    # The stop changed nothing: each step all-reduces the two workers' gradients, a sum of two floats per element,
    # and a + b == b + a exactly, so the resumed run ends bit-identical to the uninterrupted one.
    _assert_identical(model_dir, finished)


@pytest.mark.parametrize("kind", ["images", "tfrecord"])
@pytest.mark.parametrize("cache, shuffle_buffer, resumed_at", [
    pytest.param("auto", TRAIN_IMAGES, STEPS + CHECKPOINT_EVERY, id="cached-buffer-holds-a-pass"),
    pytest.param("auto", 64, STEPS + CHECKPOINT_EVERY, id="cached"),
    pytest.param("false", 64, STEPS, id="streamed-epoch-boundary"),
    pytest.param("false", 64, STEPS + CHECKPOINT_EVERY, id="streamed-mid-epoch")])
def test_a_peeked_iterator_leaves_the_resumed_file_stream_alone(kind, cache, shuffle_buffer, resumed_at, data_config,
                                                                request):
    """What the tests above meet, in seconds: Keras fit takes one batch from a first iterator (to build the model)
    and drops it before training on a second; a stream skipped to a later pass must still continue the full one."""
    data_config.source, data_config.cache, data_config.shuffle_buffer = _source(kind, request), cache, shuffle_buffer
    data_config.train_split, data_config.eval_split = "train", "test"
    strategy = tf.distribute.OneDeviceStrategy("/cpu:0")

    def batches(skip: int, count: int) -> np.ndarray:
        train = pipeline.build(data_config, BATCH, strategy, seed=0, skip_batches=skip, epochs=EPOCHS).train
        next(iter(train))  # the throw-away iterator of keras' _maybe_symbolic_build
        stream = iter(train)
        return np.stack([next(stream)[0].numpy() for _ in range(count)])

    full, resumed = batches(0, EPOCHS * STEPS)[resumed_at:], batches(resumed_at, EPOCHS * STEPS - resumed_at)
    assert np.array_equal(full, resumed), f"batches from {resumed_at} of a stream skipped there are not the full one's"
