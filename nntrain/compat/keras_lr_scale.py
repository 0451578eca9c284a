"""A learning-rate factor for some of a model's variables (Keras 3.15 has one learning rate per optimizer).

Keras's optimizers update each variable in `update_step(gradient, variable, learning_rate)`, which the TF backend
calls per variable, with the variable's slots found by the private `_get_variable_index(variable)`.
`scale_learning_rate(optimizer, variables, factor)` wraps `update_step` on the one instance nntrain builds, so the
optimizer stays a Keras built-in (`model.keras` loads in plain Keras) while `variables` are stepped at
`factor` x the schedule's rate. Decoupled weight decay (`optimizer.weight_decay`) is applied by Keras outside
`update_step`, at the full rate. No upstream issue asks for per-variable rates (Keras 2's tf.keras had none either).

`tests/test_finetune.py::test_keras_still_updates_each_variable_through_update_step` fails when Keras changes it.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import keras


def scale_learning_rate(optimizer: keras.optimizers.Optimizer, variables: Sequence[keras.Variable],
                        factor: float) -> None:
    """From now on `optimizer` (built) steps `variables` at `factor` times its learning rate."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)  # a LossScaleOptimizer's inner one updates
    scaled = {inner._get_variable_index(variable) for variable in variables}
    update_step = inner.update_step

    def scaled_update_step(self, gradient, variable, learning_rate):
        if self._get_variable_index(variable) in scaled:
            learning_rate = learning_rate * factor
        return update_step(gradient, variable, learning_rate)

    inner.update_step = types.MethodType(scaled_update_step, inner)
