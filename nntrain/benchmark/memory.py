"""Peak memory: this process on the host, and the strategy's GPUs."""

from __future__ import annotations

import resource
import sys

import tensorflow as tf

from nntrain.distribute import strategies


def host_peak_bytes() -> int:
    """Peak resident memory of this process so far."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS reports bytes, Linux KiB


def device_peak_bytes(strategy: tf.distribute.Strategy) -> int | None:
    """Peak memory TensorFlow allocated on the strategy's GPUs so far, summed; None without a GPU."""
    gpus = [d.rsplit("device:", 1)[-1] for d in strategies.devices(strategy) if "GPU" in d.upper()]
    if not gpus:
        return None
    return sum(tf.config.experimental.get_memory_info(gpu)["peak"] for gpu in gpus)
