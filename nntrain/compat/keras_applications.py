"""Keras Applications' `imagenet` weights, offline (Keras 3.15).

Each application (`keras.applications.MobileNetV3Small(weights="imagenet")`, ...) fetches its weights file with
`keras.src.utils.file_utils.get_file(fname, origin, cache_subdir="models", file_hash=...)`: from Keras's cache
(`$KERAS_HOME/models/`, else `~/.keras/models/`) when the file is there and its hash matches, else by downloading
`origin`. Keras has no public way to say "never download" nor to ask which file an application would fetch.
`cached_weights_only()` replaces `get_file` while an application is built, so a file missing from the cache (or
damaged) becomes one NntrainError naming where to place it and the URL it comes from, and nothing is downloaded.

`tests/test_finetune.py::test_imagenet_weights_missing_from_the_cache_name_the_file_and_its_url` fails when Keras
fetches weights another way.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from nntrain.errors import NntrainError


@contextlib.contextmanager
def cached_weights_only(what: str) -> Iterator[None]:
    """While open, Keras's `get_file` returns cached files only; `what` names the weights in the error."""
    original = file_utils.get_file

    def get_file(fname=None, origin=None, *args, cache_subdir="datasets", file_hash=None, cache_dir=None, **kwargs):
        folder = os.path.join(os.path.expanduser(cache_dir or keras_config.keras_home()), cache_subdir)
        path = os.path.join(folder, fname or os.path.basename(origin))
        if not os.path.isfile(path):
            raise NntrainError(f"{what} are not in Keras's cache: download {origin} and place it at {path} "
                               "(nothing is downloaded at run time), or give a weights file with "
                               "--config.model.backbone_weights=PATH")
        if file_hash and not file_utils.validate_file(path, file_hash):
            raise NntrainError(f"{what} at {path} are damaged (their hash is not {file_hash}): replace the file "
                               f"with {origin}")
        return original(fname, origin, *args, cache_subdir=cache_subdir, file_hash=file_hash, cache_dir=cache_dir,
                        **kwargs)

    file_utils.get_file = get_file
    try:
        yield
    finally:
        file_utils.get_file = original
