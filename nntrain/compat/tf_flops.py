"""TensorFlow's graph statistics registry and deprecation switch, used to count FLOPs with the v1 profiler
(`nntrain/benchmark/flops.py`); TensorFlow has no public API for either (no upstream issue asks for one).

- `register_flops(op, count)`: the profiler counts no FLOPs for `Einsum` (Dense layers on 3-D inputs, attention);
  TensorFlow's `ops.RegisterStatistics` lets us add a count.
- `deprecation_silenced()`: the profiler calls deprecated graph utilities for every op; without it each run
  prints pages of deprecation warnings.

`tests/test_compat.py::test_tensorflow_statistics_registry_and_deprecation_switch_exist` fails when TensorFlow
moves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import tensorflow as tf
from tensorflow.python.framework import ops as tf_ops
from tensorflow.python.util import deprecation


def flops(value: int) -> tf_ops.OpStats:
    """What a statistics function returns: `value` FLOPs."""
    return tf_ops.OpStats("flops", value)


def register_flops(op: str, count: Callable[[tf.Graph, tf.compat.v1.NodeDef], tf_ops.OpStats]) -> bool:
    """Registers `count` as the FLOPs of `op`; False if TensorFlow already counts it."""
    try:
        tf_ops.RegisterStatistics(op, "flops")(count)
    except KeyError:
        return False
    return True


@contextlib.contextmanager
def deprecation_silenced() -> Iterator[None]:
    """TensorFlow's deprecation warnings off while it runs."""
    with deprecation.silence():
        yield
