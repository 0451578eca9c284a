"""TF_CONFIG for multi-worker runs, built from `--worker_hosts` and `--task_index` (no TensorFlow import)."""

from __future__ import annotations

import json
import math
import os

from nntrain.distribute import addresses
from nntrain.errors import NntrainError

WORKER_TIMEOUT_ENV = "NNTRAIN_WORKER_TIMEOUT"  # --worker_timeout, for the strategy built later in this process
DEFAULT_WORKER_TIMEOUT = 120.0


def build(worker_hosts: str, task_index: int | None) -> dict:
    """The TF_CONFIG of worker `task_index` in the cluster `h1:p1,h2:p2,...`; NntrainError if malformed."""
    hosts = [host.strip() for host in worker_hosts.split(",") if host.strip()]
    if not hosts:
        raise NntrainError("--worker_hosts is empty: list every worker, e.g. "
                           "--worker_hosts=10.0.0.1:2222,10.0.0.2:2222")
    for host in hosts:
        addresses.host_port(host, "--worker_hosts", "--worker_hosts=10.0.0.1:2222,10.0.0.2:2222")
    if len(set(hosts)) != len(hosts):
        raise NntrainError(f"--worker_hosts={worker_hosts} names a worker twice: give each worker its own HOST:PORT")
    if task_index is None or not 0 <= task_index < len(hosts):
        raise NntrainError(f"--task_index={task_index} is not a worker of --worker_hosts: use 0 to {len(hosts) - 1}, "
                           "a different one on each machine (0 is the chief)")
    return {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": task_index}}


def use_worker_flags(worker_hosts: str, task_index: int | None, strategy: str) -> str:
    """Sets TF_CONFIG from `--worker_hosts`/`--task_index` when given; returns the strategy name to use."""
    if not worker_hosts:
        if task_index is not None:
            raise NntrainError("--task_index needs --worker_hosts=HOST:PORT,HOST:PORT,... (every worker, in order)")
        return strategy
    if strategy not in ("auto", "multi_worker"):
        raise NntrainError(f"--worker_hosts runs --strategy=multi_worker, not --strategy={strategy}: "
                           "drop --strategy or set it to multi_worker")
    os.environ["TF_CONFIG"] = json.dumps(build(worker_hosts, task_index))
    return "multi_worker"


def set_worker_timeout(seconds: float) -> None:
    """Sets how long a multi-worker process waits for its peers to start, or for a silent peer."""
    if not math.isfinite(seconds) or seconds <= 0:
        raise NntrainError(f"--worker_timeout={seconds} is not allowed: give the seconds to wait for peers, "
                           f"e.g. --worker_timeout={DEFAULT_WORKER_TIMEOUT:.0f}")
    os.environ[WORKER_TIMEOUT_ENV] = str(seconds)


def worker_timeout() -> float:
    """Seconds a multi-worker process waits for its peers (--worker_timeout; 120 by default)."""
    try:
        return float(os.environ.get(WORKER_TIMEOUT_ENV, DEFAULT_WORKER_TIMEOUT))
    except ValueError:
        return DEFAULT_WORKER_TIMEOUT
