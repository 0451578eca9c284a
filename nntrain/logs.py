"""Readable log lines: `HH:MM:SS message`, on stderr, separate from absl's and TensorFlow's logs."""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator

_logger = logging.getLogger("nntrain")


def _configure() -> None:
    if _logger.handlers:
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
    _logger.addHandler(handler)
    _logger.setLevel(logging.INFO)
    _logger.propagate = False


def log(message: str) -> None:
    """Logs one informational line."""
    _configure()
    _logger.info(message)


def warn(message: str) -> None:
    """Logs one line that the user should read."""
    _configure()
    _logger.warning(f"WARNING: {message}")


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
