"""Checks for what passes config validation but would fail later, run before a command writes anything."""

from __future__ import annotations

import dataclasses
import os

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from nntrain import rundir
from nntrain.distribute import strategies
from nntrain.errors import NntrainError
from nntrain.run import optim, prune

KERAS_LOSS_METRICS = ("accuracy", "acc", "crossentropy", "ce")  # Keras picks their kind from the loss at compile


def check_run(config: ml_collections.ConfigDict, prepared) -> None:
    """Everything `train` can check once data and model are built, before its first write.

    `prepared` is trainer.Prepared (not imported: trainer imports this module).
    """
    check_metrics(config.train.metrics)
    eval_steps, available = config.train.eval_steps, prepared.data.eval_steps
    if eval_steps is not None and available is not None and eval_steps > available:
        raise NntrainError(f"train.eval_steps={eval_steps} is more than the eval split '{config.data.eval_split}' "
                           f"holds ({available} batches of {config.train.batch_size}): use "
                           f"--config.train.eval_steps={available} or less, or None for the whole split")
    check_schedules(config, prepared.steps_per_epoch)
    check_memory(prepared.model, prepared.data.per_replica_batch_size, prepared.strategy)


def check_schedules(config: ml_collections.ConfigDict, steps_per_epoch: int) -> None:
    """Gradient accumulation and pruning that the run's steps cannot complete (it would end with no update, or
    with the pruning never begun or short of its target sparsity)."""
    total = steps_per_epoch * config.train.epochs
    run = f"train.epochs={config.train.epochs} x {steps_per_epoch} steps per epoch"
    accumulation = config.optimizer.gradient_accumulation_steps
    if accumulation and accumulation > total:
        raise NntrainError(f"optimizer.gradient_accumulation_steps={accumulation} is more than the run's {total} "
                           f"steps ({run}): no update would be applied; use {total} or fewer, or train longer")
    if not config.prune.target_sparsity:
        return
    last = optim.updates(config.optimizer, total)  # pruning counts optimizer updates
    where = f"the run's last update (update {last} of {run}" + (
        f", one update per {accumulation} steps)" if accumulation else ")")
    begin, end = config.prune.begin_step, prune.end_step(config.prune, last)
    if begin >= last:
        raise NntrainError(f"prune.begin_step={begin} is not before {where}: nothing would be pruned; use "
                           f"--config.prune.begin_step={max(last - 1, 0)} or less, or train longer")
    if end > last:
        raise NntrainError(f"prune.end_step={end} is after {where}: the target sparsity "
                           f"{config.prune.target_sparsity} would not be reached; use --config.prune.end_step={last} "
                           "or less (or None: 3/4 of the run), or train longer")


def check_metrics(metrics: tuple) -> None:
    """Every name in train.metrics is one Keras knows (a misspelt one fails only at the first step)."""
    for name in metrics:
        if not isinstance(name, str) or name.lower() in KERAS_LOSS_METRICS:
            continue
        try:
            keras.metrics.get(name)
        except ValueError:
            raise NntrainError(f"train.metrics: Keras has no metric '{name}': use names such as accuracy, auc, "
                               "mae, sparse_top_k_categorical_accuracy (keras.metrics)") from None


@dataclasses.dataclass(frozen=True)
class Memory:
    """Bytes one replica holds during a train step (activations: layer outputs kept for the backward pass)."""

    parameters: int
    parameter_bytes: int
    gradient_bytes: int
    optimizer_bytes: int
    activation_bytes: int

    @property
    def total_bytes(self) -> int:
        return self.parameter_bytes + self.gradient_bytes + self.optimizer_bytes + self.activation_bytes


def check_memory(model: keras.Model, per_replica_batch: int, strategy) -> None:
    """Refuses, in seconds, a run whose estimate per replica (estimate_memory) exceeds this host's memory on CPU.

    Accelerators are not checked here: their memory is not known without running (see `nntrain preflight`).
    """
    if strategies.accelerator(strategy) != "cpu":
        return
    memory = estimate_memory(model, per_replica_batch)
    available = host_memory_bytes()
    if memory.total_bytes * strategy.num_replicas_in_sync > available:
        raise NntrainError(f"train.batch_size: ~{memory.total_bytes / 2**30:,.1f} GiB per replica (preflight's "
                           f"estimate at {per_replica_batch} examples per replica) is more than this machine's "
                           f"{available / 2**30:,.1f} GiB: lower train.batch_size or the model size")


def estimate_memory(model: keras.Model, per_replica_batch: int, traced: bool = False) -> Memory:
    """Weights, gradients and optimizer slots from the built model (an optimizer not yet built is built first, in
    the model's strategy, as its first train step would); activations from every operation's outputs (layers and
    keras.ops alike) and what attention and activations keep inside a layer for the backward pass, or, `traced`,
    from the gradient graph TensorFlow builds for the model (traced_activation_bytes: seconds)."""
    if not model.optimizer.built:
        with model.distribute_strategy.scope():
            model.optimizer.build(model.trainable_variables)

    def nbytes(variables) -> int:
        return int(sum(np.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables))

    if traced:
        activations = traced_activation_bytes(model, per_replica_batch)
    else:
        activations = per_replica_batch * sum(_saved_bytes(operation) for operation in model.operations
                                              if not isinstance(operation, keras.layers.InputLayer))
    return Memory(parameters=model.count_params(), parameter_bytes=nbytes(model.weights),
                  gradient_bytes=nbytes(model.trainable_weights), optimizer_bytes=nbytes(model.optimizer.variables),
                  activation_bytes=activations)


_NOT_ACTIVATIONS = {"Const", "ReadVariableOp", "VarHandleOp"}  # constants and the weights, counted apart


def traced_activation_bytes(model: keras.Model, batch: int) -> int:
    """Bytes of the forward tensors TensorFlow keeps for the backward pass of `batch` examples: every tensor of the
    forward graph that a gradient op reads (the model traced with a GradientTape, not run; no XLA, so XLA's own
    fusion and buffer reuse are not in it). The backward pass is every op made by `tape.gradient`, also those of
    a `tf.custom_gradient` (gpt's layer norm), which are not in the tape's name scope."""
    specs = [tf.TensorSpec((batch, *tensor.shape[1:]), tensor.dtype) for tensor in model.inputs]
    forward_ops: list[int] = []

    @tf.function(autograph=False)
    def forward_backward(*inputs):
        with tf.GradientTape() as tape:
            outputs = tf.nest.flatten(model(list(inputs) if len(inputs) > 1 else inputs[0], training=True))
            total = tf.add_n([tf.reduce_sum(tf.cast(out, tf.float32)) for out in outputs])
        forward_ops.append(len(tf.compat.v1.get_default_graph().get_operations()))
        return tape.gradient(total, model.trainable_variables)

    operations = forward_backward.get_concrete_function(*specs).graph.get_operations()
    forward = {op.name for op in operations[:forward_ops[-1]]}
    kept = {tensor.ref(): tensor for op in operations[forward_ops[-1]:] for tensor in op.inputs
            if tensor.op.name in forward and tensor.op.type not in _NOT_ACTIVATIONS}
    return sum(int(np.prod(t.shape)) * t.dtype.size for t in kept.values() if t.shape.is_fully_defined())


def _saved_bytes(operation) -> int:
    """Bytes per example `operation` keeps for the backward pass: its outputs; inside attention the projected
    queries, keys and values, the (heads, queries, keys) scores before and after the mask and the softmax
    weights; a layer's output before its non-linear activation; and an Activation's input at its dtype."""
    try:
        outputs = tf.nest.flatten(operation.output)
    except (AttributeError, ValueError):  # a layer called more than once: no single output
        return 0
    saved = sum(_example_bytes(out.shape, out.dtype) for out in outputs)
    activation = getattr(operation, "activation", None)
    if isinstance(operation, keras.layers.MultiHeadAttention):
        query, value = (tuple(t.shape) for t in tf.nest.flatten(operation.input)[:2])
        heads, queries, keys = operation.num_heads, query[1], value[1]
        projected = heads * (queries + keys) * (operation.key_dim + operation.value_dim)  # q, k, v and attended
        saved += (projected + 3 * heads * queries * keys) * np.dtype(operation.compute_dtype).itemsize
    elif activation is not None and getattr(activation, "__name__", "linear") != "linear":
        # Dense(activation=...): the pre-activation; an Activation layer: its input cast to its dtype
        saved += sum(_example_bytes(out.shape, operation.compute_dtype) for out in outputs)
    return saved


def _example_bytes(shape, dtype) -> int:
    return int(np.prod([d or 1 for d in shape[1:]])) * np.dtype(dtype).itemsize


def host_memory_bytes() -> int:
    """Physical memory, or the cgroup's limit when that is lower (containers, CI)."""
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            limit = f.read().strip()
    except OSError:
        return physical
    return min(physical, int(limit)) if limit.isdigit() else physical


def check_export_dir(model_dir: str, export_dir: str) -> None:
    """export_dir is a new or empty directory outside the run, in a place that can be written."""
    if rundir.is_local(export_dir) and os.path.isfile(export_dir):
        raise NntrainError(f"export_dir '{export_dir}' is an existing file: choose a new directory")
    rundir.check(export_dir, "export_dir")
    if rundir.listdir(export_dir):
        raise NntrainError(f"export_dir '{export_dir}' exists and is not empty: choose a new directory")
    local = rundir.is_local(model_dir) and rundir.is_local(export_dir)
    run, target = ((os.path.realpath(model_dir), os.path.realpath(export_dir)) if local
                   else (model_dir.rstrip("/"), export_dir.rstrip("/")))
    if target == run or target.startswith(run + "/"):
        raise NntrainError(f"export_dir '{export_dir}' lies inside the run in '{model_dir}': choose a directory "
                           "outside model_dir")


def check_search_dir(model_dir: str) -> None:
    """`tune` writes a search into a directory it can write, never into the directory of a training run."""
    rundir.check(model_dir)
    if rundir.exists(rundir.join(model_dir, rundir.CONFIG)):
        raise NntrainError(f"model_dir '{model_dir}' holds a training run ({rundir.CONFIG}), "
                           "not a search: give `tune` its own --model_dir")
