"""Atomic writes: a reader sees the old file or the new one, never half of one (no TensorFlow import)."""

from __future__ import annotations

import os


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` to `path.tmp` beside `path`, then renames it over `path`."""
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
