"""The process-wide settings a run changes, saved and put back: `kept()` around every library call (nntrain/api.py).

A run sets Keras's global dtype policy (`distribute.execution.apply_precision`), seeds Python, NumPy, TensorFlow
and Keras (`keras.utils.set_random_seed`), may turn on op determinism and may turn off grappler's remapper; in a
notebook the next cell would inherit all of it. Half of these have no public reader or no public undo, so this
module reads upstream internals (TensorFlow 2.21, Keras 3.15; no upstream issue asks for them):
- op determinism: `tensorflow.python.framework.config.is_op_determinism_enabled` / `disable_op_determinism`;
- TensorFlow's global seed: `tensorflow.python.eager.context.global_seed` (restored by `tf.random.set_seed`);
- grappler options: `Context._optimizer_experimental_options` (the public setter cannot remove a key);
- Keras's global policy and seed: `keras.src.backend.common.global_state` ("dtype_policy", "global_random_seed",
  "global_seed_generator"), kept as they were, unset included.
`tests/test_compat.py::test_library_calls_leave_the_process_as_found` fails when any of these moves.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import tensorflow as tf
from keras.src.backend.common import global_state
from tensorflow.python.eager import context
from tensorflow.python.framework import config as tf_config

_KERAS_ATTRIBUTES = ("dtype_policy", "global_random_seed", "global_seed_generator")


@dataclasses.dataclass(frozen=True)
class State:
    keras: dict[str, Any]
    op_determinism: bool
    tf_seed: int | None
    grappler: dict[str, Any]
    python_random: Any
    numpy_random: Any


def save() -> State:
    """The process's settings as they are now."""
    return State(keras={name: global_state.get_global_attribute(name) for name in _KERAS_ATTRIBUTES},
                 op_determinism=tf_config.is_op_determinism_enabled(), tf_seed=context.global_seed(),
                 grappler=dict(context.context()._optimizer_experimental_options),
                 python_random=random.getstate(), numpy_random=np.random.get_state())


def restore(state: State) -> None:
    """Puts `state` back (what was unset is unset again)."""
    for name, value in state.keras.items():
        global_state.set_global_attribute(name, value)
    if tf_config.is_op_determinism_enabled() != state.op_determinism:
        if state.op_determinism:
            tf.config.experimental.enable_op_determinism()
        else:
            tf_config.disable_op_determinism()
    if context.global_seed() != state.tf_seed:
        tf.random.set_seed(state.tf_seed)
    ctx = context.context()
    if ctx._optimizer_experimental_options != state.grappler:
        ctx._optimizer_experimental_options = dict(state.grappler)
        ctx.set_optimizer_experimental_options({})  # drops the cached function-call options, as TF's setter does
    random.setstate(state.python_random)
    np.random.set_state(state.numpy_random)


@contextlib.contextmanager
def kept() -> Iterator[None]:
    """Runs the block, then puts the process's settings back as they were before it (also after an error)."""
    state = save()
    try:
        yield
    finally:
        restore(state)
