"""Magnitude pruning during training, Keras-3-native (tensorflow-model-optimization does not support Keras 3).

Every Dense and Conv kernel gets a mask, a non-trainable variable of a `PruningMasks` layer attached to the model
as `model.pruning`: so the masks are saved in every checkpoint and come back on resume. The mask is the kernel's
Keras variable constraint, which the optimizer applies after each update, so pruned weights stay exactly zero.
Every `prune.frequency` steps the `Prune` callback zeroes the smallest-magnitude weights of each kernel up to the
sparsity of Zhu & Gupta's (2017) schedule,

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (t_end - t_0)) ** power    for t_0 <= t <= t_end,

and writes each kernel's sparsity into the epoch's logs (`sparsity/LAYER`, hence metrics.jsonl). At the end of
training the masks are detached: `model.keras` is a plain Keras model whose kernels hold the zeros. Under
MultiWorkerMirroredStrategy every worker computes the masks from its own, identical copy of the kernels (a
stable sort), so all workers hold the same masks without communicating.
"""

from __future__ import annotations

import keras
import ml_collections
import numpy as np

from nntrain.logs import log

PRUNABLE = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
DEFAULT_END_FRACTION = 0.75  # prune.end_step None: reach the target at 3/4 of training, then recover


class PruningMasks(keras.layers.Layer):
    """Holds one 0/1 mask per pruned kernel and the step of the last mask update (all saved with the model)."""

    def __init__(self, kernels: list[keras.Variable], **kwargs):
        super().__init__(name="pruning", **kwargs)
        self.masks = [self.add_weight(shape=kernel.shape, initializer="ones", trainable=False,
                                      name=f"mask_{i}") for i, kernel in enumerate(kernels)]
        self.last_update = self.add_weight(shape=(), initializer=keras.initializers.Constant(-1), dtype="int64",
                                           trainable=False, name="last_update")


class _Mask:
    """A variable constraint that multiplies the kernel by its mask after every optimizer update."""

    def __init__(self, mask: keras.Variable):
        self.mask = mask

    def __call__(self, kernel):
        return kernel * keras.ops.cast(self.mask, kernel.dtype)


def attach(model: keras.Model, prune_config: ml_collections.ConfigDict) -> None:
    """Adds masks to `model`'s Dense and Conv kernels when prune.target_sparsity > 0 (call in strategy.scope())."""
    if not prune_config.target_sparsity:
        return
    layers = _prunable(model)
    model.pruning = PruningMasks([layer.kernel for layer in layers])
    for layer, mask in zip(layers, model.pruning.masks):
        layer.kernel.constraint = _Mask(mask)


def callbacks(model: keras.Model, prune_config: ml_collections.ConfigDict, total_steps: int) -> list:
    """[the Prune callback] for a model with masks, else []; put it before callbacks that read the epoch's logs."""
    return [Prune(prune_config, total_steps)] if getattr(model, "pruning", None) is not None else []


def sparsity(prune_config: ml_collections.ConfigDict, step: int, total_steps: int) -> float:
    """The target fraction of zeros at optimizer step `step` (Zhu & Gupta's polynomial schedule)."""
    begin, end = prune_config.begin_step, end_step(prune_config, total_steps)
    if step < begin:
        return 0.0
    progress = min((step - begin) / max(end - begin, 1), 1.0)
    initial, final = prune_config.initial_sparsity, prune_config.target_sparsity
    return final + (initial - final) * (1.0 - progress) ** prune_config.power


def kernel_sparsity(model: keras.Model) -> dict[str, float]:
    """The fraction of exact zeros in each Dense and Conv kernel, by layer name."""
    return {layer.name: float(np.mean(keras.ops.convert_to_numpy(layer.kernel) == 0)) for layer in _prunable(model)}


class Prune(keras.callbacks.Callback):
    """Updates the masks on schedule, logs per-layer sparsity each epoch and detaches the masks at the end."""

    def __init__(self, prune_config: ml_collections.ConfigDict, total_steps: int):
        super().__init__()
        self.config = prune_config
        self.total_steps = total_steps
        self.end = end_step(prune_config, total_steps)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step = int(self.model.optimizer.iterations.numpy())
        last = int(self.model.pruning.last_update.numpy())
        # Callbacks run once per `steps_per_execution` steps: update when a frequency boundary has passed, until
        # the update at or after end_step; the masks are fixed from then on.
        due = self.config.begin_step <= step and last < self.end and (
            last < 0 or step - last >= self.config.frequency or step >= self.end)
        if due:
            self._update(sparsity(self.config, step, self.total_steps))
            self.model.pruning.last_update.assign(step)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        per_layer = kernel_sparsity(self.model)
        if logs is not None:
            logs.update({f"sparsity/{name}": value for name, value in per_layer.items()})
        log("sparsity " + ", ".join(f"{name} {value:.3f}" for name, value in per_layer.items()))

    def on_train_end(self, logs: dict | None = None) -> None:
        strip(self.model)

    def _update(self, target: float) -> None:
        for layer, mask in zip(_prunable(self.model), self.model.pruning.masks):
            kernel = keras.ops.convert_to_numpy(layer.kernel)
            pruned = int(target * kernel.size)
            new_mask = np.ones(kernel.size, np.float32)
            new_mask[np.argsort(np.abs(kernel), axis=None, kind="stable")[:pruned]] = 0.0
            new_mask = new_mask.reshape(kernel.shape)
            mask.assign(new_mask)
            layer.kernel.assign(kernel * new_mask)


def strip(model: keras.Model) -> None:
    """Detaches the masks and their constraints: the model is plain Keras again, its zeros kept in the kernels."""
    if getattr(model, "pruning", None) is None:
        return
    for layer in _prunable(model):
        layer.kernel.constraint = None
    del model.pruning


def _prunable(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if isinstance(layer, PRUNABLE)]


def end_step(prune_config: ml_collections.ConfigDict, total_steps: int) -> int:
    """The update at which the masks reach prune.target_sparsity (prune.end_step, else 3/4 of the run's)."""
    if prune_config.end_step is not None:
        return prune_config.end_step
    return max(int(total_steps * DEFAULT_END_FRACTION), prune_config.begin_step + 1)
