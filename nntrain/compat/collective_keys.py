"""Work-around for tensorflow/tensorflow#62790: a second MirroredStrategy in one process fails with
"Shape mismatch in the collective instance 100".

Every `MirroredStrategy` numbers its all-reduces from the same class attribute `_collective_key_base`, so a
second strategy in a process (a notebook, a test session, a tuner trial) that trains another model collides with
the first one's collective instances. TensorFlow's own tests give each strategy another base; `distinct_keys()`
does the same while one strategy is created.

Delete this module, and its call in `nntrain/distribute/strategies.py`, once MirroredStrategy allocates its own keys;
`tests/test_compat.py::test_mirrored_strategy_still_numbers_collectives_from_a_class_attribute` fails when
TensorFlow renames or drops the attribute.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import tensorflow as tf

KEYS_PER_STRATEGY = 100_000
_created = itertools.count(1)


@contextlib.contextmanager
def distinct_keys(strategy_class: type = tf.distribute.MirroredStrategy) -> Iterator[None]:
    """While it runs, a strategy created from `strategy_class` numbers its collectives from a base of its own."""
    default = strategy_class._collective_key_base
    strategy_class._collective_key_base = default + KEYS_PER_STRATEGY * next(_created)
    try:
        yield
    finally:
        strategy_class._collective_key_base = default
