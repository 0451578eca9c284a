"""`run(config, strategy, steps)`: prepare the experiment as `train` does, then time, count and measure it."""

from __future__ import annotations

import time

import keras
import ml_collections
import tensorflow as tf

from nntrain.benchmark import flops, memory, throughput
from nntrain.distribute import strategies
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.run import trainer

DEFAULT_STEPS = 100
WARMUP_EXECUTIONS = 3  # the first execution (which compiles) and two more, before the clock starts
PIPELINE_MAX_WARMUP = 1000  # batches: one pass over the data to fill the cache, at most this many
PIPELINE_CHUNK = (16, 512)  # batches per timed pipeline call: one epoch's steps, clipped to this range
FLOPS_METHOD = "TensorFlow profiler (tf.compat.v1.profiler float_operation) on the forward+backward graph"


def run(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, steps: int = DEFAULT_STEPS) -> dict:
    """Benchmarks `config` under `strategy` with the data pipeline and compiled model `train` uses.

    Returns one flat dict: rates are steady state (`steps` timed steps after the warm-up executions), FLOPs
    are per example for forward + backward, MFU is achieved FLOP/s over the matmul peak measured here.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise NntrainError(f"--steps={steps} must be a positive number of timed training steps, "
                           f"e.g. --steps={DEFAULT_STEPS}")
    name = config.get("experiment", "?")
    log(f"bench {name}: building the data pipeline and the compiled model")
    began = time.perf_counter()
    prepared = trainer.prepare(config, strategy)
    startup_seconds = time.perf_counter() - began
    data, settings = prepared.data, prepared.execution
    per_execution = settings.steps_per_execution

    log("timing the input pipeline alone")
    chunk = min(max(prepared.steps_per_epoch, PIPELINE_CHUNK[0]), PIPELINE_CHUNK[1])
    pipeline = throughput.time_pipeline(data.train, strategy,
                                        min(prepared.steps_per_epoch + 1, PIPELINE_MAX_WARMUP), chunk)
    log(f"timing the model: {WARMUP_EXECUTIONS * per_execution} warm-up steps (the first compiles), "
        f"then {steps} or more steps")
    timing = throughput.time_model(prepared.model, data.train, per_execution, WARMUP_EXECUTIONS, steps)
    log("counting FLOPs per example")
    features, labels = _replica_batch(data.train, strategy)
    flops_per_example = flops.per_example(config, data.spec, features, labels)
    device = strategies.accelerator(strategy)
    log("measuring this machine's peak matmul FLOP/s")
    peak = flops.peak_matmul(strategy, device, keras.mixed_precision.global_policy().compute_dtype)

    step_seconds = timing.timed_seconds / timing.timed_steps
    examples_per_second = data.global_batch_size / step_seconds
    pipeline_rate = pipeline.examples / pipeline.seconds
    achieved = flops_per_example * examples_per_second
    return {
        "experiment": name,
        "strategy": strategies.describe(strategy),
        "device": device,
        "replicas": data.num_replicas,
        "global_batch_size": data.global_batch_size,
        "precision": settings.precision,
        "steps_per_execution": per_execution,
        "jit_compile": settings.jit_compile,
        "startup_seconds": startup_seconds,
        "compile_seconds": max(0.0, timing.first_execution_seconds - per_execution * step_seconds),
        "warmup_steps": timing.warmup_steps,
        "timed_steps": timing.timed_steps,
        "step_seconds": step_seconds,
        "examples_per_second": examples_per_second,
        "tokens_per_second": examples_per_second * data.spec.input_shape[0] if data.spec.vocab_size else None,
        "pipeline_examples_per_second": pipeline_rate,
        "pipeline_ratio": pipeline_rate / examples_per_second,
        "flops_per_example": flops_per_example,
        "flops_method": FLOPS_METHOD,
        "achieved_flops_per_second": achieved,
        "peak_flops_per_second": peak.flops_per_second,
        "peak_matmul_size": peak.size,
        "peak_dtype": peak.dtype,
        "mfu": achieved / peak.flops_per_second,
        "host_memory_peak_bytes": memory.host_peak_bytes(),
        "device_memory_peak_bytes": memory.device_peak_bytes(strategy),
    }


def _replica_batch(dataset: tf.distribute.DistributedDataset,
                   strategy: tf.distribute.Strategy) -> tuple[tf.Tensor, tf.Tensor]:
    """The first replica's (features, labels) of one batch."""
    features, labels = next(iter(dataset))
    return strategy.experimental_local_results(features)[0], strategy.experimental_local_results(labels)[0]
