"""TF_CONFIG for multi-worker runs, built from `--worker_hosts` and `--task_index` (no TensorFlow import)."""

from __future__ import annotations

import json
import os

from nntrain import addresses
from nntrain.errors import NntrainError


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
