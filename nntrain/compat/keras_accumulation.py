"""Training steps and updates under gradient accumulation (Keras 3.15).

With `gradient_accumulation_steps=k`, Keras's `BaseOptimizer._get_current_learning_rate` calls the schedule with
`_iterations`, the count of training steps, not with `iterations` (steps // k, the updates): documented in
`keras.optimizers.Optimizer` ("Learning rate schedules will look at "real" iterations value"), so there is no
upstream bug to wait for. A schedule over N updates would so end after N steps, k times too early.
`count_updates(optimizer)` overrides that private method on the one instance nntrain builds, so the optimizer and
its schedule stay Keras built-ins: `model.keras` loads with `keras.saving.load_model` in a process without nntrain
(where, trained on, the schedule counts steps again, as Keras documents). Training and resuming build the
optimizer through `nntrain.run.optim.optimizer`, so they always count updates.

Keras's public `optimizer.iterations` counts updates (steps // k); the step count a checkpoint, a resume and
the data stream need is the private `_iterations`: `training_steps(optimizer)`.

`tests/test_optimizer_features.py::test_keras_still_evaluates_schedules_at_training_steps` fails when Keras
changes either.
"""

from __future__ import annotations

import types

import keras


def count_updates(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer`, evaluating its learning-rate schedule at `optimizer.iterations` (updates) from now on."""
    default = optimizer._get_current_learning_rate

    def current_learning_rate(self: keras.optimizers.Optimizer):
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self.iterations)
        return default()

    optimizer._get_current_learning_rate = types.MethodType(current_learning_rate, optimizer)
    return optimizer


def training_steps(optimizer: keras.optimizers.Optimizer) -> int:
    """The training steps (batches) `optimizer` has taken; `optimizer.iterations` counts updates."""
    counting = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's inner one counts
    return int(keras.ops.convert_to_numpy(counting._iterations))
