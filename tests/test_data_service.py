"""tf.data service: a dispatcher and 2 workers on 127.0.0.1, in this process, feed `fit`."""

from __future__ import annotations

import math
import time

import pytest
from conftest import closed_port

import nntrain
from nntrain.data import service
from nntrain.errors import NntrainError

SMALL = {"train.epochs": 2, "train.steps_per_epoch": 20}


@pytest.fixture(scope="module")
def local_service():
    """One dispatcher and 2 workers for the module: stopping them waits for their clients to go (seconds)."""
    running = service.start(port=0, workers=2)
    yield running
    running.stop()


def test_service_feeds_fit_under_mirrored(local_service, tmp_path):
    config = nntrain.load_config("xor", {**SMALL, "data.service": local_service.address})
    metrics = nntrain.train(config, str(tmp_path), strategy="mirrored", verbose=0)
    assert metrics["epoch"] == 2 and math.isfinite(metrics["loss"])
    assert local_service.dispatcher._num_workers() == 2
    assert sum(worker._num_tasks() for worker in local_service.workers) >= 1  # the workers ran the pipeline


def test_unreachable_dispatcher_fails_fast(tmp_path):
    address = f"grpc://127.0.0.1:{closed_port()}"
    config = nntrain.load_config("xor", {**SMALL, "data.service": address})
    start = time.time()
    with pytest.raises(NntrainError, match=f"no tf.data service dispatcher answers at {address}"):
        nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    assert time.time() - start < 30
    assert not (tmp_path / "run").exists()


def test_bad_addresses_and_sizes_are_user_errors():
    with pytest.raises(NntrainError, match="data.service"):
        nntrain.load_config("xor", {"data.service": "127.0.0.1:5050"})
    with pytest.raises(NntrainError, match="data.service: '127.0.0.1' is not HOST:PORT"):
        service.check_reachable("grpc://127.0.0.1")
    with pytest.raises(NntrainError, match="at least 1 worker"):
        service.start(port=0, workers=0)
    with pytest.raises(NntrainError, match="--host='': give this machine's address"):
        service.serve(port=0, workers=1, max_seconds=0.5, host="")


def test_serve_runs_until_its_time_is_up(monkeypatch):
    said = []
    monkeypatch.setattr(service, "log", said.append)
    start = time.time()
    service.serve(port=0, workers=1, max_seconds=0.5)
    assert time.time() - start < 10
    assert "with 1 worker(s); train with --config.data.service=grpc://127.0.0.1:" in said[0]
