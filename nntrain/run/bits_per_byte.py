"""Bits per byte of a byte-level language model (`text:` data): its cross-entropy in bits per predicted token.

Every token of a `text:` source is a byte but the END_OF_FILE between files, so the mean next-token
cross-entropy in nats (the loss) divided by ln 2 is the bits per byte (each END_OF_FILE counted as a byte).
It is derived from the logged loss (in training and in `evaluate`), not a compiled metric, so nothing of
nntrain is saved with the model.
"""

from __future__ import annotations

import math

import keras
import ml_collections

from nntrain.logs import log


def from_nats(nats: float) -> float:
    """Mean cross-entropy per token in nats -> bits per byte."""
    return nats / math.log(2)


class BitsPerByte(keras.callbacks.Callback):
    """Adds `bits_per_byte` (and `val_bits_per_byte`) to every epoch's logs, for the callbacks that follow it;
    at the end, logs the last val_bits_per_byte beside the unigram entropy of the training bytes."""

    def __init__(self, data_config: ml_collections.ConfigDict):
        super().__init__()
        self._data_config = data_config
        self._last: float | None = None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is None:
            return
        add(logs, self._data_config)
        self._last = logs.get("val_bits_per_byte", self._last)

    def on_train_end(self, logs: dict | None = None) -> None:
        from nntrain.data import sources, text

        source = sources.open_source(self._data_config)
        entropy = text.unigram_entropy(source.files(self._data_config.train_split))
        if self._last is None:
            log(f"unigram entropy of the training bytes: {entropy:.4f} bits/byte (no val_bits_per_byte this time)")
        else:
            ratio = self._last / entropy if entropy else math.inf
            log(f"val_bits_per_byte {self._last:.4f} = {ratio:.3f} x the unigram entropy of the training bytes "
                f"({entropy:.4f} bits/byte)")


def add(metrics: dict, data_config: ml_collections.ConfigDict) -> dict:
    """Adds `bits_per_byte` beside `loss` and `val_bits_per_byte` beside `val_loss` for `text:` data; returns it."""
    if data_config.source.startswith("text:"):
        for prefix in ("", "val_"):
            if f"{prefix}loss" in metrics:
                metrics[f"{prefix}bits_per_byte"] = from_nats(float(metrics[f"{prefix}loss"]))
    return metrics


def callbacks(config: ml_collections.ConfigDict) -> list[keras.callbacks.Callback]:
    """[BitsPerByte] for a run on `text:` data, else []; it must come before callbacks that read the logs."""
    return [BitsPerByte(config.data)] if config.data.source.startswith("text:") else []
