"""Work-around for keras-team/keras#20585: Keras 3 `fit` under `MultiWorkerMirroredStrategy`.

Keras's TensorFlow trainer calls `strategy.reduce` in two ways that MultiWorkerMirroredStrategy rejects:
- `_maybe_symbolic_build` passes the whole (features, labels) batch, a structure:
  "Attempt to convert a value (PerReplica:...) with an unsupported type";
- `reduce_per_replica` passes each scalar metric with `axis=0`:
  "Invalid reduction dimension 0 for input with 0 dimensions".
`patch(strategy)` wraps that one strategy's `reduce` so that it reduces each leaf of a structure on its own,
and reduces scalars across replicas only (`axis=None`: a scalar has no batch axis to fold, so the result is
the one Keras wants). Nothing else changes.

Delete this module, and its one call in `distribute/strategies.py`, once a Keras release fixes #20585: without it,
`tests/test_multi_worker.py::test_killed_worker_stops_its_peer_and_both_resume_in_step` fails with the errors above
while Keras still has the bug, and passes once Keras is fixed.
"""

from __future__ import annotations

import tensorflow as tf


def patch(strategy: tf.distribute.MultiWorkerMirroredStrategy) -> tf.distribute.MultiWorkerMirroredStrategy:
    """Makes `strategy.reduce` accept what Keras passes it; returns the same strategy."""
    original = strategy.reduce

    def reduce(reduce_op, value, axis=None):
        return tf.nest.map_structure(lambda leaf: original(reduce_op, leaf, None if _rank(leaf) == 0 else axis),
                                     value)

    strategy.reduce = reduce
    return strategy


def _rank(value) -> int | None:
    """The rank of a tensor, or of one replica's component of a distributed value."""
    if isinstance(value, tf.distribute.DistributedValues):
        value = value.values[0]
    return getattr(value, "shape", tf.TensorShape(None)).rank
