"""Work-around for per-batch work in Keras's TensorBoard callback (`keras/src/callbacks/tensorboard.py`, Keras 3.15).

With `update_freq="epoch"` (nntrain's) Keras sets no summary writer while training (`_push_writer` returns at
once), yet `on_train_batch_end` still calls `summary.scalar` for every value in the logs after every execution of
steps: each call finds no writer and records nothing, at ~0.18 ms each (33 ms of CPU for mnist_mlp's 90
executions of 2 values; a run of steps_per_execution 1 pays it every step). `TensorBoard` here leaves the logs
out of those calls when `update_freq` is "epoch"; what is written (epoch scalars, the graph) is the same.

Delete this module, and its uses (`nntrain/run/callbacks.py`, `nntrain/tuning/hparams.py`), once Keras skips them
itself: the Keras case of `tests/test_training.py::test_tensorboard_records_no_batch_scalars_per_epoch` then fails.
"""

from __future__ import annotations

import keras


class TensorBoard(keras.callbacks.TensorBoard):
    """Keras's TensorBoard callback without the per-batch scalars that have no writer to go to."""

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        super().on_train_batch_end(batch, None if self.update_freq == "epoch" else logs)
