"""Bounded waits for what TensorFlow and gRPC would wait for forever: exit in one line instead."""

from __future__ import annotations

import contextlib
import faulthandler
import os
import subprocess
import sys
from collections.abc import Iterator

EXIT_CODE = 1
EXIT_GRACE_SECONDS = 2.0  # after the watcher's line, before faulthandler ends a blocked process
# A watcher process prints the line: TensorFlow's C++ runtime can block while holding the GIL, so no thread of
# ours would run. It exits 1 once it has printed, 0 when the block ended first (or the parent died: stdin closes).
_WATCHER = """
import select, sys
seconds, message = float(sys.argv[1]), sys.argv[2]
if not select.select([sys.stdin], [], [], seconds)[0]:
    sys.stderr.write(message + "\\n")
    sys.stderr.flush()
    sys.exit(1)
"""


def exit_now(message: str) -> None:
    """Prints `nntrain: error: message` and ends the process at once (from any thread, whatever TF is doing)."""
    sys.stdout.flush()
    print(f"nntrain: error: {message}", file=sys.stderr, flush=True)
    os._exit(EXIT_CODE)


@contextlib.contextmanager
def exit_unless_done(seconds: float, message: str, stacks_path: str) -> Iterator[None]:
    """Runs the block; if it has not finished after `seconds`, prints `nntrain: error: message` and ends this
    process with exit status 1 (what a scheduler reads as a failure, not as a kill for memory), also when it is
    blocked in TensorFlow's C++ code holding the GIL: Python's faulthandler exits from a C thread that needs no GIL,
    `EXIT_GRACE_SECONDS` after the line, writing every thread's stack to `stacks_path`. Once the line is printed
    the process exits 1 even if the block ends in the grace period."""
    sys.stderr.flush()
    watcher = subprocess.Popen([sys.executable, "-c", _WATCHER, str(seconds), f"nntrain: error: {message}"],
                               stdin=subprocess.PIPE, stderr=sys.stderr)
    with open(stacks_path, "a") as stacks:
        faulthandler.dump_traceback_later(seconds + EXIT_GRACE_SECONDS, exit=True, file=stacks)
        try:
            yield
        finally:
            faulthandler.cancel_dump_traceback_later()
            watcher.stdin.close()
            if watcher.wait(timeout=10) == EXIT_CODE:  # the line is out: keep its word
                sys.stdout.flush()
                os._exit(EXIT_CODE)
