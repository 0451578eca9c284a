"""Multi-worker runs on 127.0.0.1 for tests: workers started one by one (to stop one of them with a signal)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from nntrain.distribute import launch

REPO = Path(__file__).resolve().parent.parent


def start(args: list[str], model_dir: Path, logs: list[Path]) -> list[subprocess.Popen]:
    """`nntrain ARGS --model_dir=MODEL_DIR` as len(logs) workers on free local ports, worker i's stderr in logs[i]."""
    hosts = ",".join(f"127.0.0.1:{port}" for port in launch.free_ports(len(logs)))
    workers = []
    for index, log in enumerate(logs):
        with open(log, "w") as stderr:  # a file, not a pipe: nobody reads while the worker runs
            workers.append(subprocess.Popen([sys.executable, "-m", "nntrain.cli", *args, f"--model_dir={model_dir}",
                                             f"--worker_hosts={hosts}", f"--task_index={index}"], cwd=REPO,
                                            stdout=subprocess.DEVNULL, stderr=stderr))
    return workers


def sigterm_one(workers: list[subprocess.Popen], ready: Callable[[], bool], timeout: float = 120) -> list[int]:
    """Waits (at most `timeout` s, or until worker 0 ends) until `ready()`, sends SIGTERM to worker 1 only and
    returns every worker's exit code; kills whatever still runs."""
    try:
        deadline = time.time() + timeout
        while not ready() and time.time() < deadline and workers[0].poll() is None:
            time.sleep(0.01)
        workers[1].send_signal(signal.SIGTERM)
        return [worker.wait(timeout=60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
            worker.wait(timeout=30)


def launched(args: list[str], model_dir: Path, log: Path) -> subprocess.Popen:
    """`nntrain launch --workers=2 -- ARGS --model_dir=MODEL_DIR` in the background, its output in `log`."""
    with open(log, "w") as out:
        return subprocess.Popen([sys.executable, "-m", "nntrain.cli", "launch", "--workers=2", "--", *args,
                                 f"--model_dir={model_dir}"], cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
