"""nntrain's log lines and where they go: absl's handler under the CLI (so --log_dir, --alsologtostderr,
--logtostderr and --verbosity/-v work), `HH:MM:SS message` on stderr in a library or notebook; stdout kept for one
JSON document."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator

from absl import flags
from absl import logging as absl_logging

from nntrain.errors import NntrainError

_logger = logging.getLogger("nntrain")
_library_handler = logging.StreamHandler(sys.stderr)
_library_handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))


def _configure() -> None:
    """Library use: our own short lines on stderr. The CLI (absl flags parsed): records go to absl's handler."""
    under_absl = flags.FLAGS.is_parsed()
    verbosity = flags.FLAGS["verbosity"]
    given = under_absl and verbosity.present  # --verbosity / -v: -1 warnings only, 0 info, 1 debug
    _logger.setLevel(absl_logging.converter.absl_to_standard(verbosity.value) if given else logging.INFO)
    _logger.propagate = under_absl
    if under_absl:
        _logger.removeHandler(_library_handler)
    elif _library_handler not in _logger.handlers:
        _library_handler.stream = sys.stderr  # a notebook or a test may have replaced it
        _logger.addHandler(_library_handler)


def log(message: str) -> None:
    """Logs one informational line."""
    _configure()
    _logger.info(message, stacklevel=2)


def warn(message: str) -> None:
    """Logs one line that the user should read."""
    _configure()
    _logger.warning(f"WARNING: {message}", stacklevel=2)


def use_absl_flags() -> None:
    """After absl parsed the flags: --log_dir starts absl's log file (absl leaves that to the program)."""
    if flags.FLAGS["log_dir"].present:
        try:
            absl_logging.get_absl_handler().use_absl_log_file()
        except FileNotFoundError as e:  # absl needs an existing local directory it can write to
            raise NntrainError(f"--log_dir={flags.FLAGS.log_dir} is not a directory nntrain can write its log file "
                               f"to ({e}): create it first (mkdir -p {flags.FLAGS.log_dir})") from e


def hide_tensorflow_info() -> None:
    """TensorFlow's Python INFO lines off (absl's --verbosity shows them again)."""
    absl_logging.set_verbosity(absl_logging.WARNING)


@contextlib.contextmanager
def stdout_to_stderr(enabled: bool = True) -> Iterator[None]:
    """Sends everything written to stdout (Python's and native file descriptor 1) to stderr while it runs.

    With --json the CLI prints its one JSON document after the block; Keras's progress lines go to stderr.
    """
    if not enabled:
        yield
        return
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


class _Without(logging.Filter):
    def __init__(self, phrase: str):
        super().__init__()
        self.phrase = phrase

    def filter(self, record: logging.LogRecord) -> bool:
        return self.phrase not in record.getMessage()


@contextlib.contextmanager
def tensorflow_messages_hidden(phrase: str) -> Iterator[None]:
    """Drops TensorFlow's Python log records that contain `phrase` (expected, harmless warnings)."""
    tf_logger = logging.getLogger("tensorflow")
    without = _Without(phrase)
    tf_logger.addFilter(without)
    try:
        yield
    finally:
        tf_logger.removeFilter(without)
