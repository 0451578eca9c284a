"""Adam and AdamW updates as one TensorFlow kernel per variable (Keras 3.15, TF backend).

Keras's `Adam.update_step` (keras/src/optimizers/adam.py) writes the update out of ~20 graph ops per variable
(casts, the two beta powers, the step size, then the first and second moments and the variable each read,
combined and assigned), and runs them for every variable: for text_gpt (52 variables) ~1,000 ops per step, each
dispatched on its own when the step is not XLA compiled (jit_compile=auto is off on CPU). TensorFlow's
`ResourceApplyAdam` kernel computes the same update in one op (the arithmetic of Keras's method: moments
`m += (g - m) * (1 - beta_1)`, `v += (g^2 - v) * (1 - beta_2)`, then `var -= m * alpha / (sqrt(v) + epsilon)`
with `alpha = lr * sqrt(1 - beta_2^t) / (1 - beta_1^t)`), reading the moments Keras created, so the optimizer
state, its checkpoint and `model.keras` stay Keras's own. `fused_update(optimizer)` replaces `update_step` of the
one instance nntrain builds, with its signature (`compat.keras_lr_scale` wraps it for fine-tuning). It equals
Keras's method to float32 rounding (the kernel forms `1 - beta_1` in float32, Keras in Python);
`tests/test_optimizer_features.py::test_fused_adam_updates_as_keras_does` fails when Keras changes the method
replaced. AMSGrad, 16-bit variables and sparse gradients (an embedding's, unclipped) keep Keras's method.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf


def fused_update(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer`, an Adam or AdamW without AMSGrad, updating each variable with one `ResourceApplyAdam` op."""
    if not isinstance(optimizer, keras.optimizers.Adam) or optimizer.amsgrad:
        return optimizer

    def update_step(self: keras.optimizers.Adam, gradient, variable, learning_rate) -> None:
        # Keras's method for a 16-bit variable (the kernel's 1 - beta_2 in 16 bits is far from Keras's) and for a
        # sparse gradient (Keras squares its rows before summing repeated ones; the kernel would sum, then square)
        if variable.dtype != tf.float32 or isinstance(gradient, tf.IndexedSlices):
            return keras.optimizers.Adam.update_step(self, gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        step = tf.cast(self.iterations + 1, tf.float32)

        def constant(value: float) -> tf.Tensor:
            return tf.constant(value, tf.float32)

        tf.raw_ops.ResourceApplyAdam(
            var=_resource(variable), m=_resource(self._momentums[index]), v=_resource(self._velocities[index]),
            beta1_power=tf.pow(constant(self.beta_1), step), beta2_power=tf.pow(constant(self.beta_2), step),
            lr=tf.cast(learning_rate, tf.float32), beta1=constant(self.beta_1), beta2=constant(self.beta_2),
            epsilon=constant(self.epsilon), grad=tf.cast(gradient, tf.float32))

    optimizer.update_step = types.MethodType(update_step, optimizer)
    return optimizer


def _resource(variable) -> tf.Tensor:
    """The resource handle of a Keras or TensorFlow variable (inside an update: this device's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle
