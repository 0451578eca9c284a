"""Step checkpoints as tensor bundles, written while training goes on.

A bundle holds every variable a resume needs (the model's weights and RNG states, then the optimizer's slots) by
position (`model/I`, `optimizer/I`: Keras's variable paths change with the layer names a process hands out), in
TensorFlow's own checkpoint format (`variables.index` + `variables.data-00000-of-00001`, written by SaveV2, the
writer of `tf.train.Checkpoint`, through TensorFlow's filesystems: local, gs://, ram://).

`Writer.start` takes a snapshot and returns: each tensor of the snapshot is the variable's buffer as read, no copy;
TensorFlow copies a buffer that is still read before it updates it, so training changes no byte of a snapshot
being written, and host memory grows by at most the model + optimizer bytes while a write is in flight. One
background thread writes; at most one write is in flight (a new one waits for it). Measured at 50 M parameters
with Adam (docs/benchmarks.md): a `.keras` save blocked training 4.6-4.8 s, a bundle written in place 1.7-2.3 s,
a bundle started from a snapshot 0.01-0.03 s. `tf.train.Checkpoint`'s own async option was tried: its second
write fails with Keras 3 variables (Keras's `_copy_trackable_to_cpu` creates a tf.Variable in a tf.function).
"""

from __future__ import annotations

import os
import sys
import threading

import keras
import numpy as np
import tensorflow as tf

from nntrain import rundir
from nntrain.errors import NntrainError

PREFIX = "variables"  # a bundle directory's files: variables.index, variables.data-00000-of-00001
DATA_SUFFIX = ".data-00000-of-00001"


def _groups(model: keras.Model, optimizer: bool = True) -> list[tuple[str, list[keras.Variable]]]:
    """The variables of a bundle, in their fixed order."""
    groups = [("model", list(model.variables))]
    if optimizer:
        groups.append(("optimizer", list(model.optimizer.variables)))
    return groups


def _named(model: keras.Model, optimizer: bool = True) -> tuple[list[str], list[keras.Variable]]:
    pairs = [(f"{group}/{index}", variable) for group, variables in _groups(model, optimizer)
             for index, variable in enumerate(variables)]
    return [name for name, _ in pairs], [variable for _, variable in pairs]


def prefix(directory: str) -> str:
    """The bundle's file prefix in its step-N directory."""
    return rundir.join(directory, PREFIX)


def problem(directory: str) -> str | None:
    """Why the bundle in `directory` cannot be read (missing, damaged index, no data file), or None."""
    path = prefix(directory)
    if not rundir.exists(path + ".index"):
        return "missing"
    if not rundir.exists(path + DATA_SUFFIX):
        return f"its data file {PREFIX}{DATA_SUFFIX} is missing"
    try:  # (tf.train.load_checkpoint does not find a bundle on ram://)
        tf.compat.v1.train.NewCheckpointReader(path)
    except (tf.errors.OpError, ValueError) as e:
        return f"not a readable checkpoint: {str(e).splitlines()[0][:200]}"
    return None


class Mismatch(NntrainError):
    """The bundle holds other variables than the model (`group` "model") or its optimizer ("optimizer") has."""

    def __init__(self, group: str, detail: str):
        self.group = group
        super().__init__(detail)


def read(model: keras.Model, directory: str, optimizer: bool = True) -> None:
    """Assigns the bundle's values to the model's variables (and the optimizer's, which must be built).

    Mismatch if the bundle holds other variables than this model (or optimizer) has; nothing is assigned then.
    """
    path = prefix(directory)
    names, variables = _named(model, optimizer)
    saved = tf.compat.v1.train.NewCheckpointReader(path).get_variable_to_shape_map()
    for group, _ in _groups(model, optimizer):
        wanted = {name: list(v.shape) for name, v in zip(names, variables) if name.startswith(f"{group}/")}
        held = {name: shape for name, shape in saved.items() if name.startswith(f"{group}/")}
        if held != wanted:
            first = next((n for n in wanted if held.get(n) != wanted[n]), None) or sorted(set(held) - set(wanted))[0]
            raise Mismatch(group, f"{first}: {held.get(first, 'absent')} in the checkpoint, "
                                  f"{wanted.get(first, 'absent')} here")
    values = tf.raw_ops.RestoreV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names),
                                  dtypes=[tf.as_dtype(variable.dtype) for variable in variables])
    for variable, value in zip(variables, values):
        variable.assign(value)


NICE = 10  # how much nicer than training the writer thread runs while training goes on (Linux)


class Writer:
    """Writes bundles on one background thread, at most one in flight.

    The thread runs NICE levels below training's priority while training goes on (on 2 cores it competes with
    training for CPU: ~0.7 s per 573 MiB, measured in docs/benchmarks.md), and at training's own once training
    waits for it (`wait`). Where the priority could not be raised back (no CAP_SYS_NICE), it is never lowered.
    """

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._priority = 0  # training's (the thread that starts writes) niceness

    def start(self, model: keras.Model, directory: str, discard: list[str] = ()) -> None:
        """Waits for the write in flight, snapshots every variable, and starts writing them into `directory`; first
        the thread removes `discard` (checkpoints that state.json no longer names).

        The write refuses a weight that is NaN or infinite (rundir.NonFiniteWeights, raised by `wait`).
        """
        self.wait()
        names, variables = _named(model)
        tensors = [tf.convert_to_tensor(variable.value) for variable in variables]  # the buffers, no copy
        weights = {id(weight) for weight in model.weights}
        checked = [(variable.path, tensor) for variable, tensor in zip(variables, tensors) if id(variable) in weights]
        self._priority = _niceness()
        self._thread = threading.Thread(target=self._write, args=(directory, names, tensors, checked, list(discard)),
                                        name="nntrain-checkpoint-writer", daemon=True)
        self._thread.start()

    def _write(self, directory: str, names: list[str], tensors: list[tf.Tensor],
               checked: list[tuple[str, tf.Tensor]], discard: list[str]) -> None:
        try:
            _lower_priority(self._priority)
            for path in discard:
                rundir.remove(path)
            for name, tensor in checked:
                rundir.check_finite(name, tensor.numpy(), directory)
            rundir.remove(directory)  # a killed writer's leftover of the same step
            rundir.makedirs(directory)
            write(prefix(directory), names, tensors)
        except BaseException as e:  # handed to the training thread by wait()
            self._error = e

    def busy(self) -> bool:
        """True while a write is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> bool:
        """Blocks until the write in flight has ended; raises its error. True if a write ended here."""
        if self._thread is None:
            return False
        if self._thread.is_alive():  # training waits for it: at training's priority
            _set_niceness(self._thread.native_id, self._priority)
        self._thread.join()
        self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return True


def _niceness() -> int:
    """The calling thread's niceness (0 where threads have none of their own)."""
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) if sys.platform == "linux" else 0


def _set_niceness(thread: int | None, niceness: int) -> bool:
    """Sets a thread's niceness (Linux: per thread); False where not allowed or not possible."""
    if sys.platform != "linux" or thread is None:
        return False
    try:
        os.setpriority(os.PRIO_PROCESS, thread, niceness)
    except OSError:  # raising a priority needs CAP_SYS_NICE; the thread may have ended
        return False
    return True


def _lower_priority(priority: int) -> None:
    """The calling thread NICE levels below `priority`, if it may be raised back to it (tried with one level)."""
    me = threading.get_native_id()
    if _set_niceness(me, min(priority + 1, 19)) and _set_niceness(me, priority):
        _set_niceness(me, min(priority + NICE, 19))


def write(path: str, names: list[str], tensors: list[tf.Tensor]) -> None:
    """SaveV2 of `tensors` under `names` at the file prefix `path` (a module function: tests slow it down)."""
    tf.raw_ops.SaveV2(prefix=path, tensor_names=names, shape_and_slices=[""] * len(names), tensors=tensors)


def host_bytes(model: keras.Model) -> int:
    """Bytes of every variable a bundle holds (model and optimizer)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, group in _groups(model) for v in group)
