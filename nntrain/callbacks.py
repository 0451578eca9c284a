"""Callbacks that make runs safe to stop: atomic checkpoints, a metrics file, NaN handling."""

from __future__ import annotations

import json
import math
import os
import shutil
import time

import keras

from nntrain import guards
from nntrain.compat import keras_saving
from nntrain.files import write_text_atomic
from nntrain.logs import log

STATE = "state.json"


def _finite(logs: dict | None) -> bool:
    loss = (logs or {}).get("loss")
    return loss is not None and math.isfinite(float(loss))


def save_atomic(model: keras.Model, path: str, weights_only: bool = False) -> None:
    """Saves to a temporary file beside `path`, then renames: a reader never sees half a file."""
    guards.require_finite_weights(model, path)
    keras_saving.patch()
    directory, name = os.path.split(path)
    tmp = os.path.join(directory, f"tmp-{name}")
    if weights_only:
        model.save_weights(tmp, overwrite=True)
    else:
        model.save(tmp, overwrite=True)
    os.replace(tmp, path)


def latest_checkpoint(directory: str) -> tuple[str, int] | None:
    """(path, epochs done) of the last finished epoch's checkpoint, or None before the first one."""
    state_path = os.path.join(directory, STATE)
    if not os.path.isfile(state_path):
        return None
    with open(state_path) as f:
        state = json.load(f)
    return os.path.join(directory, state["latest"]), int(state["epoch"])


def restore(model: keras.Model, directory: str) -> int:
    """Loads the latest checkpoint (weights and optimizer state) into a compiled model; returns epochs done."""
    latest = latest_checkpoint(directory)
    if latest is None:
        return 0
    path, epoch = latest
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(path)
    return epoch


class Checkpoints(keras.callbacks.Callback):
    """After every finite epoch: `epoch-N.keras` (model + optimizer state), then `state.json` naming it.

    Writing state.json is the commit point of an epoch: a run killed at any moment resumes from a complete
    checkpoint. `best.keras` keeps the best `monitor` value (unless `keep_best` is False: a multi-worker backup).
    Unlike keras.callbacks.BackupAndRestore, weights after a non-finite loss are never saved.
    """

    def __init__(self, directory: str, monitor: str, keep_best: bool = True):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.keep_best = keep_best
        self.mode_max = any(word in monitor for word in ("acc", "auc", "precision", "recall"))
        self.best: float | None = None
        state_path = os.path.join(directory, STATE)
        if os.path.isfile(state_path):
            with open(state_path) as f:
                self.best = json.load(f).get("best")

    def on_train_begin(self, logs: dict | None = None) -> None:
        """Removes the temporary files of a save that a killed run left behind."""
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith("tmp-") or name.endswith(".tmp"):
                    os.remove(os.path.join(self.directory, name))

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not _finite(logs):
            return
        os.makedirs(self.directory, exist_ok=True)
        previous = latest_checkpoint(self.directory)
        name = f"epoch-{epoch + 1}.keras"
        path = os.path.join(self.directory, name)
        save_atomic(self.model, path)
        value = (logs or {}).get(self.monitor)
        improved = self.keep_best and value is not None and math.isfinite(float(value)) and (
            self.best is None or (float(value) > self.best if self.mode_max else float(value) < self.best))
        if improved:
            self.best = float(value)
            best, tmp = os.path.join(self.directory, "best.keras"), os.path.join(self.directory, "tmp-best.keras")
            shutil.copyfile(path, tmp)  # the same bytes: milliseconds, where a second save took ~50 ms
            os.replace(tmp, best)
        state = {"epoch": epoch + 1, "latest": name, "monitor": self.monitor, "best": self.best}
        write_text_atomic(os.path.join(self.directory, STATE), json.dumps(state, indent=2) + "\n")
        if previous and os.path.basename(previous[0]) != name:
            os.remove(previous[0])


class MetricsFile(keras.callbacks.Callback):
    """Appends one JSON line per epoch to `path`; after a resume, drops lines of epochs that will rerun.

    Each line: the epoch, Keras's logs, the learning rate, the epoch's `seconds` (training and validation) and
    `wall_time`, the Unix time the line was written (as TensorBoard's events record it).
    """

    def __init__(self, path: str, initial_epoch: int):
        super().__init__()
        self.path = path
        self.initial_epoch = initial_epoch
        self.epoch_start = 0.0

    def on_train_begin(self, logs: dict | None = None) -> None:
        kept = []
        if os.path.isfile(self.path):
            with open(self.path) as f:
                kept = [line for line in f if line.strip() and json.loads(line)["epoch"] <= self.initial_epoch]
        write_text_atomic(self.path, "".join(kept))

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch_start = time.time()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.time()
        record = {"epoch": epoch + 1, **{k: float(v) for k, v in (logs or {}).items()},
                  "learning_rate": float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)),
                  "seconds": round(now - self.epoch_start, 3), "wall_time": round(now, 3)}
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")


class StopOnNaN(keras.callbacks.Callback):
    """Stops at the first non-finite loss and remembers where it happened and the last finite loss."""

    def __init__(self, steps_per_epoch: int):
        super().__init__()
        self.steps_per_epoch = steps_per_epoch
        self.epoch = 0
        self.last_finite_loss: float | None = None
        self.nan_step: int | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if _finite(logs):
            self.last_finite_loss = float(logs["loss"])
            return
        self.nan_step = self.epoch * self.steps_per_epoch + batch + 1
        self.model.stop_training = True
        log(f"non-finite loss at step {self.nan_step} (epoch {self.epoch + 1}, batch {batch + 1}): stopping")
