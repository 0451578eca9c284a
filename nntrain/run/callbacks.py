"""Callbacks of a run: `callbacks_for`, the one list `train` and every tuning trial fit with; the metrics file, the
NaN guard, early stopping (a monitor's direction is config.monitor_mode's).

Checkpoints and resume are in checkpoints.py.
"""

from __future__ import annotations

import math
import time
from typing import TYPE_CHECKING

import keras
import ml_collections

from nntrain import registry
from nntrain.compat import keras_accumulation, keras_tensorboard
from nntrain.config import monitor_mode
from nntrain.logs import log
from nntrain.run import finetune, optim, prune
from nntrain.run.bits_per_byte import callbacks as bits_per_byte_callbacks

if TYPE_CHECKING:
    from nntrain.run.runstate import RunState


def finite_loss(logs: dict | None) -> bool:
    loss = (logs or {}).get("loss")
    return loss is not None and math.isfinite(float(loss))


def callbacks_for(config: ml_collections.ConfigDict, model: keras.Model, steps_per_epoch: int,
                  nan_guard: StopOnNaN, *, checkpoints: keras.callbacks.Callback | None,
                  metrics_file: RunState | None = None, tensorboard_dir: str | None = None,
                  resumed: bool = False) -> list[keras.callbacks.Callback]:
    """The callbacks of a run or a tuning trial of `config`, in order.

    EMA weights are swapped in first (so evaluation and saves see them), then the fine-tuning phase change; pruning
    and bits/byte add to the logs before anything reads them; then the metrics line (`metrics_file`: the run's
    RunState, None for a trial or a multi-worker backup); then `checkpoints`, the epoch's commit point after the
    line that describes it (the run's `Checkpoints`; None for a trial, whose best epoch keras-tuner saves into the
    trial's own directory with the callbacks it passes after these); TensorBoard into `tensorboard_dir` (a trial's
    come from keras-tuner); early stopping; last the experiment file's `get_callbacks(config)`. `resumed`: restored
    from a checkpoint.
    """
    train = config.train
    callbacks: list[keras.callbacks.Callback] = [
        *optim.callbacks(config, resumed=resumed), *finetune.callbacks(config),
        *prune.callbacks(model, config.prune, optim.updates(config.optimizer, steps_per_epoch * train.epochs)),
        nan_guard, *bits_per_byte_callbacks(config)]
    if metrics_file is not None:
        callbacks.append(MetricsFile(metrics_file))
    if checkpoints is not None:
        callbacks.append(checkpoints)
    if tensorboard_dir:
        callbacks.append(keras_tensorboard.TensorBoard(tensorboard_dir))
    if train.early_stopping_patience:
        callbacks.append(early_stopping(train.monitor, train.monitor_mode, train.early_stopping_patience))
    return [*callbacks, *registry.experiment_callbacks(config)]


def early_stopping(monitor: str, mode: str, patience: int) -> keras.callbacks.EarlyStopping:
    """Keras's EarlyStopping, with the direction of `monitor_mode`."""
    return keras.callbacks.EarlyStopping(monitor, patience=patience, mode=monitor_mode(monitor, mode))


class MetricsFile(keras.callbacks.Callback):
    """Adds one strict-JSON line per epoch to metrics.jsonl through `run` (`RunState.add_metrics`).

    Each line: the epoch, Keras's logs (non-finite values as null), the learning rate, the epoch's `seconds`
    (training and validation) and `wall_time`, the Unix time the line was written (as TensorBoard's events do).
    After a mid-epoch resume, that epoch's line averages the steps run since the resume.
    """

    def __init__(self, run: RunState):
        super().__init__()
        self.run = run
        self.epoch_start = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not finite_loss(logs):  # a diverged epoch leaves no line
            return
        now = time.time()
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                  "seconds": round(now - self.epoch_start, 3), "wall_time": round(now, 3)}
        self.run.add_metrics(record)


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where it happened and the last finite loss.

    With steps_per_execution > 1 Keras reports once per block of steps: the step is then known to a block. A
    resumed run passes the loss it had (its last metrics line) as the last finite loss so far.
    """

    def __init__(self, steps_per_epoch: int, last_finite_loss: float | None = None):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self.last_finite_loss = last_finite_loss
        self.last_step = 0  # the step of the last report
        self.first_nan_step: int | None = None
        self.nan_step: int | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.last_step = self._step()

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def _step(self) -> int:
        return keras_accumulation.training_steps(self.model.optimizer)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step, previous = self._step(), self.last_step
        self.last_step = step
        if finite_loss(logs):
            self.last_finite_loss = float(logs["loss"])
            return
        self.first_nan_step, self.nan_step = previous + 1, step
        self.model.stop_training = True
        log(f"non-finite loss {self.where()} (epoch {self.epoch + 1}): stopping")

    def describe(self) -> str:
        """Where the loss became non-finite, and the last finite loss (Keras's running mean over the epoch)."""
        loss = (f"{self.last_finite_loss:.6g}" if self.last_finite_loss is not None
                else "none (the first step was not finite)")
        return f"loss became NaN/inf {self.where()}; last finite loss {loss}"

    def where(self) -> str:
        """'at step N', or 'within steps A-B' where Keras reported a block of steps."""
        if self.first_nan_step == self.nan_step:
            return f"at step {self.nan_step}"
        return f"within steps {self.first_nan_step}-{self.nan_step}"
