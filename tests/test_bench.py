"""`nntrain bench`: every field present, numbers positive and consistent with each other."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import tensorflow as tf

import nntrain
from nntrain.benchmark import format_table
from nntrain.distribute import strategies
from nntrain.errors import NntrainError

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
RATES = ("startup_seconds", "step_seconds", "examples_per_second", "pipeline_examples_per_second", "pipeline_ratio",
         "flops_per_example", "achieved_flops_per_second", "peak_flops_per_second", "mfu", "host_memory_peak_bytes")
FIELDS = {*RATES, "experiment", "strategy", "device", "replicas", "global_batch_size", "precision",
          "steps_per_execution", "jit_compile", "compile_seconds", "warmup_steps", "timed_steps", "flops_method",
          "peak_matmul_size", "peak_dtype", "device_memory_peak_bytes", "tokens_per_second"}


def _assert_consistent(result: dict, steps: int) -> None:
    assert set(result) == FIELDS
    for key in RATES:
        assert result[key] > 0, key
    assert result["compile_seconds"] >= 0
    assert result["step_seconds"] * result["examples_per_second"] == pytest.approx(result["global_batch_size"])
    assert result["pipeline_ratio"] == pytest.approx(result["pipeline_examples_per_second"]
                                                     / result["examples_per_second"])
    assert result["achieved_flops_per_second"] == pytest.approx(result["flops_per_example"]
                                                                * result["examples_per_second"])
    assert result["mfu"] == pytest.approx(result["achieved_flops_per_second"] / result["peak_flops_per_second"])
    assert 0 < result["mfu"] <= 1
    assert result["timed_steps"] >= steps and result["timed_steps"] % result["steps_per_execution"] == 0
    assert result["warmup_steps"] >= result["steps_per_execution"]
    if not tf.config.list_physical_devices("GPU"):
        assert result["device_memory_peak_bytes"] is None


@pytest.fixture(scope="module")
def mnist_mirrored() -> dict:
    """mnist_mlp on real MNIST under MirroredStrategy over the two logical CPUs of conftest."""
    config = nntrain.load_config("mnist_mlp", {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:8000]",
                                               "data.eval_split": "test[8000:]"})
    return nntrain.bench(config, strategy="mirrored", steps=10)


def test_bench_mnist_mlp_mirrored_is_consistent(mnist_mirrored):
    _assert_consistent(mnist_mirrored, steps=10)
    assert (mnist_mirrored["replicas"], mnist_mirrored["global_batch_size"]) == (2, 128)
    assert mnist_mirrored["steps_per_execution"] == 1  # forced under MirroredStrategy


def test_bench_counts_forward_and_backward_flops(mnist_mirrored):
    """Dense 784-256-128-10: forward and weight-gradient matmuls, plus input gradients of the two upper layers."""
    forward = 2 * (784 * 256 + 256 * 128 + 128 * 10)
    matmuls = 2 * forward + 2 * (256 * 128 + 128 * 10)
    assert matmuls <= mnist_mirrored["flops_per_example"] <= 1.02 * matmuls  # + biases, activations, loss


def test_bench_table_shows_every_measurement(mnist_mirrored):
    table = format_table(mnist_mirrored)
    for label in ("throughput", "input pipeline alone", "FLOPs per example", "peak matmul", "MFU",
                  "peak host memory", "peak device memory", "compile (first execution)"):
        assert label in table
    assert f"{mnist_mirrored['examples_per_second']:,.0f} examples/s" in table


@pytest.mark.slow
def test_bench_cli_json(tmp_path):
    done = subprocess.run([sys.executable, "-m", "nntrain.cli", "bench", "--experiment=xor", "--strategy=cpu",
                           "--steps=8", "--json"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    _assert_consistent(result, steps=8)
    assert result["experiment"] == "xor" and result["global_batch_size"] == 4
    assert list(tmp_path.iterdir()) == []  # bench writes nothing


@pytest.mark.fast
def test_bench_rejects_non_positive_steps():
    with pytest.raises(NntrainError, match=r"^--steps=0 must be a positive number of timed training steps"):
        nntrain.bench("xor", strategy="cpu", steps=0)


@pytest.mark.fast
def test_einsum_flops_are_counted():
    """TensorFlow's profiler has no FLOPs for Einsum (Keras attention); nntrain.benchmark registers them."""
    @tf.function
    def contract(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        return tf.einsum("...ij,...jk->...ik", a, b)

    graph = contract.get_concrete_function(tf.TensorSpec((7, 1, 3, 4)), tf.TensorSpec((6, 4, 5))).graph
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    assert tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops == 2 * 7 * 6 * 3 * 4 * 5


@pytest.mark.fast
def test_auto_strategy_on_cpu_is_plain_keras():
    """OneDeviceStrategy re-created its input iterators at every validation: nntrain's epochs took twice as long."""
    strategy = strategies.create_strategy("auto")
    if tf.config.list_logical_devices("GPU"):  # one GPU: OneDeviceStrategy on it; several: MirroredStrategy
        assert strategies.accelerator(strategy) == "gpu"
    else:
        assert strategies.describe(strategy).startswith("default strategy (plain Keras) with 1 replica(s)")
        assert strategies.accelerator(strategy) == "cpu" and strategies.kind(strategy) == "single"


def test_second_mirrored_strategy_trains_another_model(tmp_path):
    """Two MirroredStrategies in one process used to share collective keys and fail on other shapes."""
    for experiment in ("xor", "quadratic"):
        config = nntrain.load_config(experiment, {"train.epochs": "1", "train.steps_per_epoch": "2"})
        metrics = nntrain.train(config, str(tmp_path / experiment), strategy="mirrored", verbose=0)
        assert metrics["epoch"] == 1
