"""Bounded waits for what TensorFlow and gRPC would wait for forever: exit in one line instead."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator

EXIT_CODE = 1
# A watcher process: TensorFlow's C++ runtime can block while holding the GIL, so no thread of ours would run.
_WATCHER = """
import os, select, signal, sys
parent, seconds, message = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
if not select.select([sys.stdin], [], [], seconds)[0]:  # stdin closes when the block ends or the parent dies
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    os.kill(parent, signal.SIGKILL)
"""


def exit_now(message: str) -> None:
    """Prints `nntrain: error: message` and ends the process at once (from any thread, whatever TF is doing)."""
    sys.stdout.flush()
    print(f"nntrain: error: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


@contextlib.contextmanager
def exit_unless_done(seconds: float, message: str) -> Iterator[None]:
    """Runs the block; if it has not finished after `seconds`, prints `nntrain: error: message` and kills this
    process (exit status 137: SIGKILL, since a process blocked in TensorFlow's C++ code runs no Python)."""
    sys.stderr.flush()
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(os.getpid()), str(seconds),
                                f"nntrain: error: {message}"], stdin=subprocess.PIPE, stderr=sys.stderr)
    try:
        yield
    finally:
        watcher.stdin.close()
        watcher.wait(timeout=10)
