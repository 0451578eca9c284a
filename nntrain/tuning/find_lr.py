"""`find_lr`: the learning-rate range test (Smith, "Cyclical Learning Rates for Training Neural Networks", 2015).

Training starts at `min_lr` and multiplies the rate every step, up to `max_lr` after `num_steps` steps (the
config's own `exponential` schedule), recording each step's loss, until the loss diverges. Smith's reading of
the curve gives the range: from where the loss starts to fall to where it stops falling. The curve is written
as lr_range.csv and lr_range.png (matplotlib, Agg backend) into the output directory.
"""

from __future__ import annotations

import csv
import io
import math

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import rundir
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.run import trainer

CSV_NAME = "lr_range.csv"
PNG_NAME = "lr_range.png"
SMOOTHING = 0.9  # exponential moving average of the loss (bias-corrected); 0.98 lags too far over 100 steps
DIVERGED = 4.0  # stop when the smoothed loss exceeds this multiple of its minimum
STARTS_FALLING = 0.1  # the range starts where the loss has made this fraction of its total fall


class _Recorder(keras.callbacks.Callback):
    """Per step: the learning rate used and the loss; stops once the smoothed loss diverges or is not finite."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self._average = 0.0
        self._rate = 0.0

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))  # one step per epoch: the step's own loss
        step = len(self.rows) + 1
        self._average = SMOOTHING * self._average + (1 - SMOOTHING) * loss
        smoothed = self._average / (1 - SMOOTHING ** step)
        self.rows.append({"step": step, "learning_rate": self._rate, "loss": loss, "smoothed_loss": smoothed})
        lowest = min(r["smoothed_loss"] for r in self.rows)
        if not math.isfinite(smoothed) or smoothed > DIVERGED * lowest:
            self.model.stop_training = True


def find_lr(config: ml_collections.ConfigDict, output_dir: str, strategy: tf.distribute.Strategy,
            min_lr: float = 1e-6, max_lr: float = 10.0, num_steps: int = 100) -> dict:
    """Runs the range test at config's batch size; writes the curve; returns it with the suggested range."""
    if not 0 < min_lr < max_lr or num_steps < 2:
        raise NntrainError(f"learning rates from {min_lr} to {max_lr} over {num_steps} steps: use "
                           "0 < --min_lr < --max_lr and --lr_steps >= 2")
    if not output_dir:
        raise NntrainError("no output directory given: pass --model_dir=DIR for lr_range.csv and lr_range.png")
    rundir.check(output_dir)
    config = config.copy_and_resolve_references()
    config.optimizer.learning_rate = min_lr
    config.schedule.update({"name": "exponential", "warmup_steps": 0, "decay_steps": num_steps,
                            "decay_rate": max_lr / min_lr})  # min_lr * (max_lr/min_lr) ** (step/num_steps)
    config.train.update({"epochs": num_steps, "steps_per_epoch": 1, "steps_per_execution": 1})
    config.data.eval_split = ""
    nn_config.validate(config)
    prepared = trainer.prepare(config, strategy)
    recorder = _Recorder()
    log(f"learning-rate range test: {min_lr:g} to {max_lr:g} over {num_steps} steps of batch size "
        f"{config.train.batch_size}")
    # One step per epoch, so that the loss Keras reports is that step's, not a running mean.
    prepared.model.fit(prepared.data.train, epochs=num_steps, steps_per_epoch=1, callbacks=[recorder], verbose=0,
                       shuffle=False)
    rows = recorder.rows
    suggestion = suggest(rows)
    rundir.makedirs(output_dir)
    csv_path, png_path = rundir.join(output_dir, CSV_NAME), rundir.join(output_dir, PNG_NAME)
    _write_csv(csv_path, rows)
    _write_png(png_path, rows, suggestion, config.train.batch_size)
    return {**suggestion, "steps": len(rows), "batch_size": config.train.batch_size, "csv": csv_path,
            "png": png_path}


def suggest(rows: list[dict]) -> dict:
    """Smith's range: `low` where the smoothed loss starts to fall, `high` where it is lowest (None: it never fell)."""
    finite = [r for r in rows if math.isfinite(r["smoothed_loss"])]
    if len(finite) < 3:
        return {"low": None, "high": None, "steepest": None}
    losses = np.array([r["smoothed_loss"] for r in finite])
    rates = np.array([r["learning_rate"] for r in finite])
    lowest = int(np.argmin(losses))
    fall = losses[0] - losses[lowest]
    if lowest == 0 or fall <= 0:
        return {"low": None, "high": None, "steepest": None}
    starts = int(np.argmax(losses <= losses[0] - STARTS_FALLING * fall))
    slopes = np.gradient(losses[:lowest + 1], np.log(rates[:lowest + 1]))
    return {"low": float(rates[starts]), "high": float(rates[lowest]), "steepest": float(rates[int(np.argmin(slopes))])}


def _write_csv(path: str, rows: list[dict]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=["step", "learning_rate", "loss", "smoothed_loss"])
    writer.writeheader()
    writer.writerows(rows)
    rundir.write_text(path, text.getvalue())


def _write_png(path: str, rows: list[dict], suggestion: dict, batch_size: int) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(figsize=(7, 4.5))
    rates = [r["learning_rate"] for r in rows]
    axes.plot(rates, [r["loss"] for r in rows], color="0.75", linewidth=1, label="loss per step")
    axes.plot(rates, [r["smoothed_loss"] for r in rows], color="C0", linewidth=2, label="smoothed loss")
    if suggestion["low"] is not None:
        axes.axvspan(suggestion["low"], suggestion["high"], color="C2", alpha=0.15,
                     label=f"suggested range {suggestion['low']:.2g} to {suggestion['high']:.2g}")
    finite = [r["loss"] for r in rows if math.isfinite(r["loss"])]
    if finite:
        axes.set_ylim(min(finite) * 0.9, finite[0] * 1.5)
    axes.set_xscale("log")
    axes.set(xlabel="learning rate", ylabel="training loss",
             title=f"Learning-rate range test (batch size {batch_size})")
    axes.legend()
    figure.tight_layout()
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=100)
    pyplot.close(figure)
    rundir.write_bytes(path, png.getvalue())


def format_result(result: dict) -> str:
    """The suggested range, as a search-space line, and where the curve is."""
    if result["low"] is None:
        found = "the loss never fell: widen --min_lr/--max_lr or raise --lr_steps"
    else:
        found = (f"suggested learning-rate range at batch size {result['batch_size']}: {result['low']:.3g} to "
                 f"{result['high']:.3g} (steepest fall at {result['steepest']:.3g})\n  in get_search_space(): "
                 f"\"optimizer.learning_rate\": log_range({result['low']:.2g}, {result['high']:.2g})")
    return f"{found}\ncurve: {result['png']} and {result['csv']}"
