"""FLOPs: the model's forward + backward count from TensorFlow's profiler, and this machine's matmul peak.

The count is `tf.compat.v1.profiler`'s `float_operation` over the graph of one training step's gradient
computation (forward, loss, backward; no optimizer update), at the per-replica batch, divided by that batch.
TensorFlow registers FLOPs for MatMul, BatchMatMul, Conv2D and their gradients, element-wise ops and
reductions, but not for Einsum (Keras's MultiHeadAttention and EinsumDense): `_einsum_flops` adds it.
"""

from __future__ import annotations

import dataclasses
import math
import time

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain import models
from nntrain.compat import tf_flops
from nntrain.data.spec import DatasetSpec
from nntrain.run import optim

PEAK_SIZE = {"cpu": 2048, "gpu": 8192, "tpu": 8192}  # n of the n x n matmuls that measure the peak
PEAK_CHAIN = 4  # matmuls per timed call
PEAK_MIN_SECONDS = 2.0  # time the peak for at least this long ...
PEAK_MAX_CALLS = 100  # ... in at most this many calls


@dataclasses.dataclass(frozen=True)
class Peak:
    flops_per_second: float  # best call, summed over replicas
    size: int
    dtype: str


def _einsum_flops(graph: tf.Graph, node: tf.compat.v1.NodeDef):
    """2 x the product of every index size, for two-operand contractions such as 'abc,cd->abd'."""
    inputs = [name for name in node.input if not name.startswith("^")]
    terms = node.attr["equation"].s.decode().split("->")[0].split(",")
    if len(terms) != 2:
        return tf_flops.flops(0)
    sizes: dict[str, int] = {}
    batch_shapes = []
    for term, name in zip(terms, inputs):
        shape = graph.get_tensor_by_name(name if ":" in name else f"{name}:0").shape.as_list()
        letters = term.replace("...", "")
        ellipsis = len(shape) - len(letters)
        batch_shapes.append(shape[:ellipsis] if "..." in term else [])
        sizes.update(zip(letters, shape[ellipsis:]))
    return tf_flops.flops(2 * math.prod(sizes.values()) * math.prod(np.broadcast_shapes(*batch_shapes)))


tf_flops.register_flops("Einsum", _einsum_flops)  # a no-op where TensorFlow counts Einsum itself


def per_example(config: ml_collections.ConfigDict, spec: DatasetSpec, features: tf.Tensor, labels: tf.Tensor) -> float:
    """Forward + backward FLOPs per example of `config`'s model (a fresh copy), on one replica's batch."""
    model = models.build(config.model, spec)
    loss_fn = optim.loss(config)

    @tf.function
    def gradients(x: tf.Tensor, y: tf.Tensor) -> list[tf.Tensor]:
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
            if model.losses:
                loss += tf.add_n(model.losses)
        return tape.gradient(loss, model.trainable_variables)

    graph = gradients.get_concrete_function(tf.TensorSpec.from_tensor(features),
                                            tf.TensorSpec.from_tensor(labels)).graph
    options = (tf.compat.v1.profiler.ProfileOptionBuilder(tf.compat.v1.profiler.ProfileOptionBuilder.float_operation())
               .with_empty_output().build())
    with tf_flops.deprecation_silenced():  # the profiler calls deprecated graph utilities on every op
        profile = tf.compat.v1.profiler.profile(graph=graph, options=options)
    return profile.total_float_ops / int(features.shape[0])


def peak_matmul(strategy: tf.distribute.Strategy, device: str, dtype: str) -> Peak:
    """The best FLOP/s of chained n x n matmuls in `dtype` run on every replica at once (bounded time)."""
    n = PEAK_SIZE[device]

    def chain() -> tf.Tensor:
        x = tf.random.normal((n, n), dtype=dtype)
        b = tf.random.normal((n, n), stddev=1 / math.sqrt(n), dtype=dtype)  # keeps x's scale steady
        for _ in tf.range(PEAK_CHAIN):
            x = tf.matmul(x, b)
        return tf.cast(tf.reduce_sum(x[:1]), tf.float32)

    @tf.function
    def step() -> tf.Tensor:
        return strategy.reduce("SUM", strategy.run(chain), axis=None)

    step().numpy()  # trace and warm up
    flops = 2 * n ** 3 * PEAK_CHAIN * strategy.num_replicas_in_sync
    best, start, calls = 0.0, time.perf_counter(), 0
    while calls < PEAK_MAX_CALLS and time.perf_counter() - start < PEAK_MIN_SECONDS:
        began = time.perf_counter()
        step().numpy()
        best = max(best, flops / (time.perf_counter() - began))
        calls += 1
    return Peak(flops_per_second=best, size=n, dtype=dtype)
