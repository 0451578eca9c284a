"""TensorFlow's start-up: its chatter (C++ log lines written before its logging starts) kept off the terminal, and
the packages a process does not use kept out of its import."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator

from absl import logging as absl_logging

from nntrain.errors import NntrainError


def tensorflow_logs_to_errors() -> None:
    """TensorFlow's C++ records below errors off (TF_CPP_MIN_LOG_LEVEL=2), unless the user set the level."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@contextlib.contextmanager
def native_stderr_captured() -> Iterator[None]:
    """Sends file descriptor 2 to a temporary file; replays it if the block raises.

    TF 2.21 ignores TF_CPP_MIN_LOG_LEVEL for the lines it prints while importing and finding devices.
    """
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        except NntrainError:  # a user's mistake: its one line says everything
            raise
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def import_tensorflow_quietly() -> None:
    """Imports TensorFlow and lists devices with the start-up lines hidden (NNTRAIN_TF_LOGS=1 shows them)."""
    with tensorflow_start_up_hidden():
        pass


@contextlib.contextmanager
def tensorflow_start_up_hidden(start: bool = True, unused: Iterable[str] = ()) -> Iterator[None]:
    """Hides TensorFlow's start-up lines from a block that may import it (an experiment file importing keras);
    with `start`, imports it at the block's end, with the `unused` packages hidden from that import
    (packages_hidden), and lists devices. NNTRAIN_TF_LOGS=1 shows the lines."""
    if "tensorflow" in sys.modules:
        yield
        return
    with contextlib.nullcontext() if os.environ.get("NNTRAIN_TF_LOGS") else native_stderr_captured():
        yield
        if start:
            with packages_hidden(unused):
                import tensorflow as tf

            tf.config.list_physical_devices()


@contextlib.contextmanager
def packages_hidden(names: Iterable[str]) -> Iterator[None]:
    """Inside the block, importing one of `names` that is not imported yet fails as if it were not installed, so
    that an optional import (`try: import pandas`) passes it by; after the block it imports as usual."""
    hidden = [name for name in names if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # type: ignore[assignment]  # Python's own marker for "import fails"
    try:
        yield
    finally:
        for name in hidden:
            if sys.modules.get(name, "") is None:
                del sys.modules[name]


def native_stderr_to_file(path: str) -> None:
    """From now on, file descriptor 2 (TensorFlow's C++ log records) goes to `path`; Python's `sys.stderr` and
    the log handlers that wrote to it stay on the terminal."""
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _native_stderr_to(log_fd)
    os.close(log_fd)


@contextlib.contextmanager
def native_records_hidden() -> Iterator[None]:
    """While the block runs, TensorFlow's C++ log records (oneDNN, TFLite's converter and interpreter, ...) go to
    a temporary file, Python's `sys.stderr` and log lines stay on the terminal; the records are replayed if the
    block fails other than with a user's mistake. NNTRAIN_TF_LOGS=1 shows them."""
    if os.environ.get("NNTRAIN_TF_LOGS"):
        yield
        return
    with tempfile.TemporaryFile() as captured:
        restore = _native_stderr_to(captured.fileno())
        try:
            yield
        except NntrainError:
            raise
        except BaseException:
            restore()
            captured.seek(0)
            sys.stderr.write(captured.read().decode(errors="replace"))
            raise
        finally:
            restore()


def _native_stderr_to(fd: int) -> Callable[[], None]:
    """Points file descriptor 2 at `fd`, keeping `sys.stderr` and the handlers that wrote to it on the terminal
    (in a Jupyter kernel `sys.stderr` is not fd 2: it stays as it is); returns the function that undoes it."""
    sys.stderr.flush()
    old = sys.stderr
    saved = os.dup(2)
    on_fd2 = _fileno(old) == 2
    terminal = os.fdopen(os.dup(2), "w", buffering=1, errors="backslashreplace") if on_fd2 else old
    os.dup2(fd, 2)
    moved = []
    if on_fd2:
        sys.stderr = terminal
        loggers = [logging.getLogger(), *(logger for logger in logging.Logger.manager.loggerDict.values()
                                          if isinstance(logger, logging.Logger))]
        handlers = [h for logger in loggers for h in logger.handlers]
        handlers.append(absl_logging.get_absl_handler().python_handler)  # the CLI's log lines go through absl's
        for handler in handlers:
            if isinstance(handler, logging.StreamHandler) and handler.stream is old:
                handler.setStream(terminal)
                moved.append(handler)

    restored = []

    def restore() -> None:
        if restored:
            return
        restored.append(True)
        if on_fd2:
            terminal.flush()
            for handler in moved:
                handler.setStream(old)
            sys.stderr = old
        os.dup2(saved, 2)
        os.close(saved)
        if on_fd2:
            terminal.close()

    return restore


def _fileno(stream: object) -> int | None:
    try:
        return stream.fileno()
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is an OSError and a ValueError
        return None
