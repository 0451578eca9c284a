"""Readable log lines: `HH:MM:SS message`, on stderr, separate from absl's and TensorFlow's logs."""

from __future__ import annotations

import logging
import sys

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
