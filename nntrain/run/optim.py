"""Optimizer, learning-rate schedule and loss from the config, built from Keras's own classes only.

Everything here is saved with the model (its compile config), so only Keras built-ins are used: `model.keras`
and the checkpoints load with `keras.saving.load_model` in a process without nntrain.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.compat import ema_resume, keras_accumulation, keras_fused_adam, keras_weight_decay
from nntrain.errors import NntrainError


def learning_rate(config: ml_collections.ConfigDict, total_steps: int):
    """The schedule named by config.schedule, over `total_steps` optimizer updates."""
    base = config.optimizer.learning_rate
    sched = config.schedule
    decay_steps = sched.decay_steps or max(total_steps - sched.warmup_steps, 1)
    schedules = keras.optimizers.schedules
    if sched.name == "constant":
        rate = base
    elif sched.name == "exponential":
        rate = schedules.ExponentialDecay(base, decay_steps, sched.decay_rate)
    elif sched.name in ("polynomial", "linear"):
        power = 1.0 if sched.name == "linear" else sched.power
        rate = schedules.PolynomialDecay(base, decay_steps, sched.end_learning_rate, power=power)
    else:  # cosine
        rate = schedules.CosineDecay(base, decay_steps, alpha=sched.end_learning_rate / base)
    if not sched.warmup_steps:
        return rate
    # Keras's CosineDecay warms up linearly from 0 to `base`; alpha=1 keeps a constant rate after it.
    alpha = 1.0 if sched.name == "constant" else sched.end_learning_rate / base
    return schedules.CosineDecay(0.0, decay_steps, alpha=alpha, warmup_target=base,
                                 warmup_steps=sched.warmup_steps)


def updates(optimizer_config: ml_collections.ConfigDict, total_steps: int) -> int:
    """The optimizer updates of `total_steps` training steps: one per `gradient_accumulation_steps` steps."""
    return total_steps // (optimizer_config.gradient_accumulation_steps or 1)


def optimizer(config: ml_collections.ConfigDict, total_steps: int) -> keras.optimizers.Optimizer:
    """The optimizer named by config.optimizer, with its schedule, gradient clipping, gradient accumulation and
    weight averaging (EMA); `total_steps` counts training steps (batches). With accumulation, the schedule runs
    over the updates and is evaluated at the update count (compat.keras_accumulation)."""
    opt = config.optimizer
    every = opt.gradient_accumulation_steps or 1
    common = {"learning_rate": learning_rate(config, max(updates(opt, total_steps), 1)), "clipvalue": opt.clip_value,
              "clipnorm": opt.clip_norm, "global_clipnorm": opt.global_clip_norm,
              "gradient_accumulation_steps": opt.gradient_accumulation_steps, "use_ema": opt.use_ema,
              "ema_momentum": opt.ema_momentum}
    if opt.weight_decay is not None:
        common["weight_decay"] = opt.weight_decay
    optimizers = keras.optimizers
    if opt.name == "sgd":
        built = optimizers.SGD(momentum=opt.momentum, nesterov=opt.nesterov, **common)
    elif opt.name == "rmsprop":
        built = optimizers.RMSprop(momentum=opt.momentum, **common)
    else:
        built = {"adam": optimizers.Adam, "adamw": optimizers.AdamW, "adagrad": optimizers.Adagrad}[opt.name](**common)
    keras_weight_decay.decay_once_per_update(built)
    keras_fused_adam.fused_update(built)
    return keras_accumulation.count_updates(built) if every > 1 else built


def callbacks(config: ml_collections.ConfigDict, resumed: bool = False) -> list[keras.callbacks.Callback]:
    """With `optimizer.use_ema`: evaluation, and the callbacks after this one (checkpoints), see the EMA weights.

    `resumed`: the model was restored from an epoch checkpoint, which holds the EMA weights.
    """
    return [ema_resume.swap_ema_weights(resumed)] if config.optimizer.use_ema else []


def loss(config: ml_collections.ConfigDict) -> keras.losses.Loss:
    """The loss named by config.train.loss (outputs are probabilities, not logits).

    Classes come as one-hot vectors when data.one_hot_labels is set: Keras smooths one-hot labels only.
    """
    smoothing = config.train.label_smoothing
    if config.train.loss == "mse":
        if smoothing:
            raise NntrainError(f"config.train.label_smoothing={smoothing} needs a classification loss; set it to 0")
        return keras.losses.MeanSquaredError()
    if config.train.loss == "binary_crossentropy":
        return keras.losses.BinaryCrossentropy(label_smoothing=smoothing)
    if config.data.one_hot_labels:  # config.validate asks for them when label_smoothing is set
        return keras.losses.CategoricalCrossentropy(label_smoothing=smoothing)
    return keras.losses.SparseCategoricalCrossentropy()
