"""Resuming a run whose checkpoints were written with EMA weights swapped in (`keras.callbacks.SwapEMAWeights(
swap_on_epoch=True)`, Keras 3.15).

The callback swaps the model's weights with the optimizer's moving averages at each epoch's end, so an epoch
checkpoint holds the EMA weights in the model and the raw weights in the optimizer's averages. A new callback
starts with its private flag `_ema_weights_in_model=False` and so does not swap back at the next epoch's start:
the resumed run would train on from the EMA weights
(`tests/test_optimizer_features.py::test_a_resumed_ema_run_ends_like_an_uninterrupted_one` fails without this).
`swap_ema_weights(resumed=True)` starts the callback in the state the checkpoint is in. Keras has no public way
to say so (no upstream issue found). A run that finished and is extended with more epochs cannot resume exactly:
at its last epoch Keras overwrote the averages with the EMA weights (`_finalize_ema_values`).

`tests/test_compat.py::test_swap_ema_weights_still_tracks_its_state_in_a_flag` fails when Keras changes it.
"""

from __future__ import annotations

import keras


def swap_ema_weights(resumed: bool) -> keras.callbacks.SwapEMAWeights:
    """Keras's SwapEMAWeights(swap_on_epoch=True); `resumed`: the model holds the EMA weights of a checkpoint."""
    callback = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    callback._ema_weights_in_model = resumed
    return callback
