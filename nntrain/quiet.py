"""TensorFlow's start-up: its chatter (C++ log lines written before its logging starts) kept off the terminal, and
the packages a command does not use kept out of it."""

from __future__ import annotations

import contextlib
import importlib.abc
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
    with `start`, imports it at the block's end and lists devices. Inside the block, TensorFlow and Keras do not
    get the `unused` packages (imports_refused). NNTRAIN_TF_LOGS=1 shows the lines."""
    if "tensorflow" in sys.modules:
        yield
        return
    with contextlib.nullcontext() if os.environ.get("NNTRAIN_TF_LOGS") else native_stderr_captured(), \
            imports_refused(unused, importers=_TENSORFLOW_AND_KERAS):
        yield
        if start:
            import tensorflow as tf

            tf.config.list_physical_devices()


_TENSORFLOW_AND_KERAS = ("tensorflow", "keras")


@contextlib.contextmanager
def imports_refused(packages: Iterable[str], importers: Iterable[str]) -> Iterator[None]:
    """Inside the block, a module of the `importers` packages that imports one of `packages` (or a module in it)
    is told it is not installed, so that its optional imports (`try: import pandas`) pass it by. Anyone else's
    import (a user's experiment file), a package imported before, and every import after the block work as usual.
    """
    finder = _RefusingFinder(tuple(packages), tuple(importers))
    if not finder.packages:
        yield
        return
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)


class _RefusingFinder(importlib.abc.MetaPathFinder):
    """The meta path finder of imports_refused: consulted only for modules not imported yet."""

    def __init__(self, packages: tuple[str, ...], importers: tuple[str, ...]):
        self.packages, self.importers = packages, importers

    def find_spec(self, fullname: str, path=None, target=None) -> None:
        if _in(fullname, self.packages) and _in(_importer(), self.importers):
            raise ModuleNotFoundError(f"No module named {fullname!r} (not imported during nntrain's start-up)",
                                      name=fullname)
        return None  # the other finders decide


def _in(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def _importer() -> str:
    """The module whose code runs the import being resolved: the first frame outside the import machinery."""
    frame = sys._getframe(2)
    while frame is not None and (frame.f_code.co_filename.startswith("<frozen importlib")
                                 or frame.f_globals.get("__name__") in ("importlib", __name__)):
        frame = frame.f_back
    return frame.f_globals.get("__name__", "") if frame is not None else ""


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
