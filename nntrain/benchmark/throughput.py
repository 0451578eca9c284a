"""Wall-clock rates: the compiled model under `fit` (with its process CPU time), and the tf.data pipeline on its
own."""

from __future__ import annotations

import dataclasses
import math
import time

import keras
import tensorflow as tf

PIPELINE_MIN_SECONDS = 1.0  # time the pipeline for at least this long ...
PIPELINE_MAX_CALLS = 50  # ... in at most this many chunks


@dataclasses.dataclass(frozen=True)
class ModelTiming:
    first_execution_seconds: float  # tracing, graph optimisation (and XLA) plus one execution's steps
    warmup_steps: int  # steps run before the clock starts, the first execution included
    timed_steps: int
    timed_seconds: float
    timed_cpu_seconds: float  # the process's CPU time (all its threads) over the timed steps: less swayed by load


@dataclasses.dataclass(frozen=True)
class PipelineTiming:
    examples: int
    seconds: float


class _StepClock(keras.callbacks.Callback):
    """(steps done, wall time) and (steps done, process CPU time) at the start and after every execution.

    Defining `on_train_batch_end` makes Keras convert each execution's logs to Python numbers, i.e. wait for
    the execution to finish, so every mark is taken after the work it counts.
    """

    def __init__(self) -> None:
        super().__init__()
        self.marks: dict[int, float] = {}
        self.cpu_marks: dict[int, float] = {}

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.marks[0], self.cpu_marks[0] = time.perf_counter(), time.process_time()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.marks[batch + 1], self.cpu_marks[batch + 1] = time.perf_counter(), time.process_time()


def time_model(model: keras.Model, dataset: tf.distribute.DistributedDataset, steps_per_execution: int,
               warmup_executions: int, timed_steps: int) -> ModelTiming:
    """Runs `fit` for warm-up executions, then at least `timed_steps` steps (whole executions) on the clock."""
    warmup = steps_per_execution * warmup_executions
    timed = math.ceil(timed_steps / steps_per_execution) * steps_per_execution
    clock = _StepClock()
    model.fit(dataset, epochs=1, steps_per_epoch=warmup + timed, callbacks=[clock], verbose=0,
              shuffle=False)
    marks, cpu = clock.marks, clock.cpu_marks
    return ModelTiming(first_execution_seconds=marks[steps_per_execution] - marks[0], warmup_steps=warmup,
                       timed_steps=timed, timed_seconds=marks[warmup + timed] - marks[warmup],
                       timed_cpu_seconds=cpu[warmup + timed] - cpu[warmup])


def time_pipeline(dataset: tf.distribute.DistributedDataset, strategy: tf.distribute.Strategy,
                  warmup_batches: int, chunk: int) -> PipelineTiming:
    """Examples per second of the pipeline alone: batches are fetched on every replica's device and dropped.

    The warm-up should be at least one pass over the data, so that a cached pipeline is timed from its cache.
    """
    iterator = iter(dataset)

    @tf.function
    def consume(iterator, batches: tf.Tensor) -> tf.Tensor:
        examples = tf.constant(0, tf.int64)
        for _ in tf.range(batches):
            features = tf.nest.flatten(next(iterator))[0]  # elements are (features, label)
            for part in strategy.experimental_local_results(features):
                examples += tf.shape(part, out_type=tf.int64)[0]
        return examples

    consume(iterator, tf.constant(warmup_batches)).numpy()
    examples, start, calls = 0, time.perf_counter(), 0
    while calls < PIPELINE_MAX_CALLS and (calls == 0 or time.perf_counter() - start < PIPELINE_MIN_SECONDS):
        examples += int(consume(iterator, tf.constant(chunk)).numpy())
        calls += 1
    return PipelineTiming(examples=examples, seconds=time.perf_counter() - start)
