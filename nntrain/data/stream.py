"""The train stream that an exact resume can continue: pass p over the data is read and shuffled with its own seed.

`shuffle(seed=s, reshuffle_each_iteration=True).repeat()` draws each pass's order from a seed generator whose
state depends on how the dataset was iterated before (Keras fit first takes one batch from a throw-away iterator),
so a rebuilt pipeline skipped to batch N did not continue the stream a running one was reading. Here every pass
is built from its own seed, `seed * PASS_SEED_STRIDE + p`, which orders both its files and its examples, with no
reshuffle: the stream is a pure function of (seed, position), and `skip` finds any position.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import tensorflow as tf

PASS_SEED_STRIDE = 1_000_003  # seed of pass p: seed * stride + p (distinct for every seed and pass)
_traced_as_is = tf.autograph.experimental.do_not_convert


def shuffled_passes(make_pass: Callable[[tf.Tensor], tf.data.Dataset] | tf.data.Dataset, num_examples: int,
                    shuffle_buffer: int, seed: int, total_examples: int) -> tf.data.Dataset:
    """Enough passes for `total_examples`, then repeats; pass p is `make_pass(its seed)` (about `num_examples`
    long: its files read in that seed's order), or the one dataset `make_pass` when every pass reads the same
    (a cached split), shuffled with that seed. `make_pass` is traced once (tf.data flat_map), so a split's file
    list is in the graph once, not once per pass."""
    passes = math.ceil(total_examples / max(1, num_examples)) + 1
    same = make_pass if isinstance(make_pass, tf.data.Dataset) else None

    def one_pass(p: tf.Tensor) -> tf.data.Dataset:
        # No graph-level seed in this traced function (the process's global one is left alone): the pass seed
        # alone orders the pass, and TF cannot combine a tensor op seed with a global seed of 0 (Python bool error).
        tf.random.set_seed(None)
        pass_seed = seed * PASS_SEED_STRIDE + p
        data = same if same is not None else make_pass(pass_seed)
        return data.shuffle(shuffle_buffer, seed=pass_seed, reshuffle_each_iteration=False)

    # AutoGraph's conversion of one_pass took 0.03 s of CPU in a fresh process; it is needed only where one_pass
    # calls a source's reader (whose maps, created inside, inherit the conversion setting).
    return tf.data.Dataset.range(passes).flat_map(one_pass if same is None else _traced_as_is(one_pass)).repeat()
