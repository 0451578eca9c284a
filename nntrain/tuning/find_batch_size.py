"""`find_batch_size`: training throughput of power-of-two batch sizes, and the largest one that still pays.

The Deep Learning Tuning Playbook chooses the batch size for throughput: the largest batch that still cuts
training time, after which the learning rate (and regularisation) is re-tuned for it. Each batch size is built
like `train` builds it, warmed up (compiled), then timed inside one `fit` over at least `num_steps` steps and
MIN_SECONDS; doubling stops when memory runs out, when the batch would leave fewer than MIN_STEPS_PER_EPOCH steps
per epoch of the train split or exceed `max_batch_size`, or after PATIENCE doublings without a gain.
"""

from __future__ import annotations

import math
import time

import keras
import ml_collections
import tensorflow as tf

from nntrain import config as nn_config
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.run import trainer

MIN_GAIN = 0.10  # a doubling must raise examples/s by 10% over every smaller batch to count as faster
PATIENCE = 2  # doublings without such a gain before the search stops
MAX_BATCH_SIZE = 65536
MIN_SECONDS = 1.0  # each batch size is timed for at least this long, so that noise and call overheads wash out
MAX_TIMED_STEPS = 100_000
MIN_STEPS_PER_EPOCH = 10  # a batch size that leaves fewer steps per epoch is not recommended (nor timed)


def find_batch_size(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, start: int = 16,
                    max_batch_size: int | None = None, num_steps: int = 20) -> dict:
    """Measures examples/s for doubling batch sizes; returns the rows and the recommended batch size."""
    if start < 1 or num_steps < 1 or (max_batch_size is not None and max_batch_size < start):
        raise NntrainError(f"batch sizes from {start} up to {max_batch_size} with {num_steps} timed steps: "
                           "start and the steps must be >= 1, and --max_batch_size >= start")
    start = min(start, config.train.batch_size)  # the experiment's own batch fits its train split
    config = config.copy_and_resolve_references()
    config.data.eval_split = ""  # throughput of training steps only
    config.train.steps_per_epoch = None
    nn_config.validate(config)
    replicas = strategy.num_replicas_in_sync
    batch = replicas * 2 ** math.ceil(math.log2(max(1, start // replicas)))
    limit, rows, recommended, best, stale, stopped = max_batch_size or MAX_BATCH_SIZE, [], None, 0.0, 0, ""
    while not stopped:
        config.train.batch_size = batch
        try:
            examples_per_second, steps_per_epoch, train_examples = _throughput(config, strategy, num_steps)
        except (tf.errors.ResourceExhaustedError, MemoryError):
            stopped = f"batch size {batch} ran out of memory"
            break
        rows.append({"batch_size": batch, "examples_per_second": round(examples_per_second, 1),
                     "steps_per_epoch": steps_per_epoch})
        log(f"batch size {batch}: {examples_per_second:,.0f} examples/s, {steps_per_epoch} steps/epoch")
        if examples_per_second >= best * (1 + MIN_GAIN):
            recommended, stale = batch, 0
        else:
            stale += 1
        best = max(best, examples_per_second)
        batch *= 2
        if stale >= PATIENCE:
            stopped = f"throughput stopped improving by {MIN_GAIN:.0%} per doubling"
        elif batch > min(limit, train_examples // MIN_STEPS_PER_EPOCH):
            stopped = f"the next batch size {batch} " + (
                f"leaves fewer than {MIN_STEPS_PER_EPOCH} steps per epoch of the {train_examples} train examples"
                if train_examples // MIN_STEPS_PER_EPOCH < limit else f"exceeds the limit {limit}")
    return {"recommended": recommended, "rows": rows, "stopped": stopped, "min_gain": MIN_GAIN}


class _Timer(keras.callbacks.Callback):
    """Times the steps after `warmup` (compilation, cache fill); stops once `steps` steps and MIN_SECONDS passed."""

    def __init__(self, warmup: int, steps: int):
        super().__init__()
        self.warmup, self.steps = warmup, steps
        self.start: tuple[int, float] | None = None
        self.end: tuple[int, float] | None = None

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if self.start is None:
            if batch + 1 >= self.warmup:
                self.start = (batch, now)
            return
        self.end = (batch, now)
        if batch - self.start[0] >= self.steps and now - self.start[1] >= MIN_SECONDS:
            self.model.stop_training = True

    def steps_per_second(self) -> float:
        (first, started), (last, ended) = self.start, self.end
        return (last - first) / (ended - started)


def _throughput(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
                num_steps: int) -> tuple[float, int, int]:
    """(examples/s over at least `num_steps` timed steps, steps per epoch, train examples) at config's batch size."""
    keras.backend.clear_session()
    prepared = trainer.prepare(config, strategy)
    per_call = prepared.execution.steps_per_execution
    timer = _Timer(warmup=2 * per_call, steps=max(num_steps, 2 * per_call))
    prepared.model.fit(prepared.data.train, epochs=1, steps_per_epoch=MAX_TIMED_STEPS, callbacks=[timer], verbose=0,
                       shuffle=False)
    return (timer.steps_per_second() * config.train.batch_size, prepared.steps_per_epoch,
            prepared.data.spec.train_examples)

def format_result(result: dict) -> str:
    """The measurements as a table, then the recommendation."""
    lines = [f"{'batch size':>10}  {'examples/s':>12}  {'steps/epoch':>11}"]
    lines += [f"{r['batch_size']:>10}  {r['examples_per_second']:>12,.0f}  {r['steps_per_epoch']:>11}"
              for r in result["rows"]]
    lines.append(f"stopped: {result['stopped']}")
    if result["recommended"] is not None:
        lines.append(f"largest batch size that still speeds training (+{result['min_gain']:.0%} examples/s per "
                     f"doubling): {result['recommended']}\n  --config.train.batch_size={result['recommended']}, "
                     "then re-tune the learning rate for it (nntrain tune, nntrain find-lr)")
    return "\n".join(lines)
