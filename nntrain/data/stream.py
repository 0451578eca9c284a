"""The train stream that an exact resume can continue: pass p over the data is shuffled with its own seed.

`shuffle(seed=s, reshuffle_each_iteration=True).repeat()` draws each pass's order from a seed generator whose
state depends on how the dataset was iterated before, so a rebuilt pipeline skipped to batch N did not continue
the stream a running one was reading (the resumed weights differed). Here every pass is its own shuffle with a
fixed seed and no reshuffle: the stream is a pure function of (seed, position), and `skip` finds any position.
"""

from __future__ import annotations

import math

import tensorflow as tf

PASS_SEED_STRIDE = 1_000_003  # seed of pass p: seed * stride + p (distinct for every seed and pass)


def shuffled_passes(dataset: tf.data.Dataset, num_examples: int, shuffle_buffer: int, seed: int,
                    total_examples: int) -> tf.data.Dataset:
    """Enough shuffled passes over `dataset` (about `num_examples` long) for `total_examples`, then repeats."""
    passes = math.ceil(total_examples / max(1, num_examples)) + 1
    stream = None
    for p in range(passes):
        one = dataset.shuffle(shuffle_buffer, seed=seed * PASS_SEED_STRIDE + p, reshuffle_each_iteration=False)
        stream = one if stream is None else stream.concatenate(one)
    return stream.repeat()
