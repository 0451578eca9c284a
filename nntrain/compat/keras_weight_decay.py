"""Decoupled weight decay that evaluates the learning-rate schedule once per update (Keras 3.15, TF backend).

Keras's `TFOptimizer._apply_weight_decay` (keras/src/backend/tensorflow/optimizer.py) reads `self.learning_rate`
inside the function it runs for each variable, so a schedule is evaluated once per decayed variable: for text_gpt
(52 variables, warmup + cosine) that was 4,560 of the train step's 14,761 traced ops, each schedule reading the
step counter again. Tracing and XLA compiling them costs every run's start-up, and a step run without XLA executes
them all. `decay_once_per_update(optimizer)` replaces the method on the one instance nntrain builds with the same
arithmetic (`variable - variable * weight_decay * learning_rate`, both cast to the variable's dtype) at a rate
evaluated once, so results are bit-identical and the optimizer stays a Keras built-in (`model.keras` loads in plain
Keras). `tests/test_optimizer_features.py::test_weight_decay_reads_the_schedule_once_and_decays_as_keras_does`
fails when Keras changes the method it replaces.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf


def decay_once_per_update(optimizer: keras.optimizers.Optimizer) -> keras.optimizers.Optimizer:
    """`optimizer`, evaluating its learning rate once per weight-decay update rather than once per variable."""
    if optimizer.weight_decay is None:
        return optimizer

    def apply_weight_decay(self: keras.optimizers.Optimizer, variables: list) -> None:
        rate = self.learning_rate  # in the replica's context: merge_call hands each device its own copy

        def decay_all(distribution, variables, rate):
            def decay(variable, rate):
                if self._use_weight_decay(variable):
                    variable.assign_sub(variable * tf.cast(self.weight_decay, variable.dtype)
                                        * tf.cast(rate, variable.dtype))

            for variable in variables:
                variable = variable.value if isinstance(variable, keras.Variable) else variable
                distribution.extended.update(variable, decay, args=(rate,), group=False)

        tf.__internal__.distribute.interim.maybe_merge_call(decay_all, self._distribution_strategy, variables, rate)

    optimizer._apply_weight_decay = types.MethodType(apply_weight_decay, optimizer)
    return optimizer
