"""Precision, steps_per_execution and jit_compile: defaults that work for each strategy and device.

Known failures this steers around:
- MirroredStrategy + steps_per_execution > 1 fails (keras-team/keras#19246), and + jit_compile fails on
  logical CPU devices ("Trying to access resource ... located in device CPU:1").
- mixed_float16 on CPU runs ~200x slower unless XLA compiles it or grappler's remapper is off (oneDNN fuses
  fp16 MatMul+BiasAdd into a slow kernel).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import keras
import ml_collections
import tensorflow as tf

from nntrain.distribute import strategies
from nntrain.logs import log

TPU_STEPS_PER_EXECUTION = 32
SINGLE_DEVICE_STEPS_PER_EXECUTION = 8
BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")  # /proc/cpuinfo flags of CPUs with bfloat16 matmul instructions
# The file of the CPU's flags; NNTRAIN_CPUINFO names another (tests give an empty one: float32 on every machine).
CPUINFO = os.environ.get("NNTRAIN_CPUINFO", "/proc/cpuinfo")


@dataclasses.dataclass(frozen=True)
class Execution:
    precision: str
    steps_per_execution: int
    jit_compile: bool | str  # "auto" leaves the choice to Keras
    why_precision: str = ""  # how precision=auto chose, for the start-up line


def resolve(train_config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
            steps_per_epoch: int) -> Execution:
    """Chooses precision, steps_per_execution and jit_compile; logs every change made to a user's setting."""
    strategy_kind = strategies.kind(strategy)
    device = strategies.accelerator(strategy)
    precision, why = train_config.precision, ""
    if precision == "auto":
        precision, why = auto_precision(device, cpu_flags() if device == "cpu" else ())

    steps = train_config.steps_per_execution
    if strategy_kind in ("mirrored", "multi_worker"):
        if steps is not None and steps > 1:
            log(f"steps_per_execution={steps} -> 1: Keras fails with it under {strategy_kind} "
                "(keras-team/keras#19246)")
        steps = 1
    elif steps is None:
        steps = largest_divisor(steps_per_epoch, TPU_STEPS_PER_EXECUTION if strategy_kind == "tpu"
                                else SINGLE_DEVICE_STEPS_PER_EXECUTION)
    elif steps_per_epoch % steps:
        divisor = largest_divisor(steps_per_epoch, steps)
        log(f"steps_per_execution={steps} -> {divisor}: Keras runs whole executions, so {steps} would overrun "
            f"each epoch of {steps_per_epoch} steps (and end the learning-rate schedule early)")
        steps = divisor

    jit = train_config.jit_compile
    if strategy_kind in ("mirrored", "multi_worker") and device == "cpu":
        if jit:
            log(f"jit_compile=True -> False: XLA fails under {strategy_kind} on CPU devices")
        jit = False
    if precision == "mixed_float16" and device == "cpu":
        if jit is not False:
            if jit is None:
                log("jit_compile -> True: float16 on CPU is ~200x slower without XLA")
            jit = True
        else:
            log("float16 on CPU without XLA: turning off grappler's remapper (otherwise ~200x slower)")
            tf.config.optimizer.set_experimental_options({"remapping": False})
    return Execution(precision=precision, steps_per_execution=steps,
                     jit_compile="auto" if jit is None else jit, why_precision=why)


def auto_precision(device: str, flags: Iterable[str] = ()) -> tuple[str, str]:
    """precision=auto on `device` ("tpu" | "gpu" | "cpu") whose CPU has `flags`: (policy, why, for the log)."""
    if device != "cpu":
        return {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}[device], f"auto on {device.upper()}"
    found = sorted(set(flags) & set(BF16_CPU_FLAGS))
    if found:
        return "mixed_bfloat16", f"auto: this CPU has {' and '.join(found)}"
    return "float32", f"auto: this CPU has no {' or '.join(BF16_CPU_FLAGS)}"


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open(CPUINFO) as f:
            return {flag for line in f if line.startswith("flags") for flag in line.split(":", 1)[1].split()}
    except OSError:
        return set()


def largest_divisor(steps_per_epoch: int, at_most: int) -> int:
    """The largest steps_per_execution <= at_most that divides an epoch: the optimizer then takes exactly
    epochs x steps_per_epoch steps (keras-team/keras#20861: Keras runs whole executions past an epoch's end)."""
    return max(d for d in range(1, max(1, min(at_most, steps_per_epoch)) + 1) if steps_per_epoch % d == 0)


def apply_precision(precision: str) -> None:
    """Sets Keras's global dtype policy (models built afterwards use it)."""
    keras.mixed_precision.set_global_policy(precision)
