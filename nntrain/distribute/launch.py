"""`nntrain launch --workers=N -- train ...`: N local worker processes of one multi-worker run.

Lets users try `--strategy=multi_worker` on one machine before they rent several. Each worker is the same
`nntrain train` command with `--worker_hosts` (free ports on 127.0.0.1) and its own `--task_index`; their
output is interleaved line by line with a `[worker N]` prefix. If one worker fails, the others are stopped.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from nntrain.errors import NntrainError
from nntrain.logs import log

STOP_GRACE_SECONDS = 10.0
POLL_SECONDS = 0.2
RESERVED_FLAGS = ("--worker_hosts", "--task_index")


def free_ports(count: int) -> list[int]:
    """`count` distinct TCP ports on 127.0.0.1 that nothing listens on right now."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def worker_commands(workers: int, args: list[str]) -> list[list[str]]:
    """The command line of each local worker; NntrainError if `args` is not a `train` command."""
    if workers < 1:
        raise NntrainError(f"--workers={workers}: launch at least 1 worker (2 to try multi-worker)")
    if not args or args[0] != "train":
        raise NntrainError("nntrain launch runs a train command: nntrain launch --workers=2 -- train "
                           "--experiment=mnist_mlp --model_dir=runs/mnist_mlp_mw")
    for arg in args:
        if arg.split("=")[0] in RESERVED_FLAGS:
            raise NntrainError(f"nntrain launch sets {arg.split('=')[0]} itself: drop {arg}")
    hosts = ",".join(f"127.0.0.1:{port}" for port in free_ports(workers))
    return [[sys.executable, "-m", "nntrain.cli", *args, f"--worker_hosts={hosts}", f"--task_index={index}"]
            for index in range(workers)]


def launch(workers: int, args: list[str]) -> int:
    """Runs `nntrain ARGS` as `workers` local workers; returns 0, or the exit code of the first that failed."""
    commands = worker_commands(workers, args)
    log(f"launching {workers} workers: {commands[0][-2]}")
    return run_workers(commands)


def run_workers(commands: list[list[str]]) -> int:
    """Runs the commands side by side, output prefixed `[worker N]`; stops all when one fails or on Ctrl-C."""
    env = {key: value for key, value in os.environ.items() if key != "TF_CONFIG"}
    env["PYTHONUNBUFFERED"] = "1"
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
                 for command in commands]
    lock = threading.Lock()
    streams = [threading.Thread(target=_stream, args=(index, process.stdout, lock), daemon=True)
               for index, process in enumerate(processes)]
    for thread in streams:
        thread.start()
    try:
        code = _wait(processes)
    except KeyboardInterrupt:
        code = 130
    failed = next((index for index, process in enumerate(processes) if process.poll() not in (None, 0)), None)
    if code:
        _stop(processes)
    for thread in streams:
        thread.join(timeout=STOP_GRACE_SECONDS)
    if code == 130:
        log("interrupted: all workers stopped; run the same command again to resume")
    elif code:
        log(f"worker {failed} failed (exit code {code}): stopped the others")
    return code


def _stream(index: int, stream: IO[str], lock: threading.Lock) -> None:
    for line in stream:
        with lock:
            sys.stdout.write(f"[worker {index}] {line}")
            sys.stdout.flush()


def _wait(processes: list[subprocess.Popen]) -> int:
    """Waits until all workers succeed (0) or one fails (its exit code)."""
    while True:
        codes = [process.poll() for process in processes]
        failed = [code for code in codes if code not in (None, 0)]
        if failed:
            return failed[0]
        if all(code == 0 for code in codes):
            return 0
        time.sleep(POLL_SECONDS)


def _stop(processes: list[subprocess.Popen]) -> None:
    """SIGTERM to the workers still running, SIGKILL to any still there after the grace period."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.time() + STOP_GRACE_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
