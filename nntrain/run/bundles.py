"""Step checkpoints as tensor bundles, written while training goes on.

A bundle holds every variable a resume needs (the model's weights and RNG states, then the optimizer's slots) by
position (`model/I`, `optimizer/I`: Keras's variable paths change with the layer names a process hands out) in two
files: `tensors.data`, each tensor's bytes as they lie in memory (C order, little-endian on every platform
TensorFlow runs on; up to 4 KiB of zeros before each, see `_DataFile`), and `tensors.json`, the index (each
tensor's name, dtype, shape and offset), written after the data. A local data file is written with O_DIRECT, others
(gs://, ram://) through tf.io.gfile. Bundles in TensorFlow's checkpoint format (`variables.index` +
`variables.data-00000-of-00001`, SaveV2: nntrain's until December 2026) are still read.

`Writer.start` takes a snapshot and returns: each tensor of the snapshot is the variable's buffer as read, no copy;
TensorFlow copies a buffer that is still read before it updates it, so training changes no byte of a snapshot
being written, and host memory grows by at most the model + optimizer bytes while a write is in flight; the writer
lets go of each buffer once written. One background thread writes; at most one write is in flight (a new one waits
for it). Measured at 50 M parameters with Adam (573 MiB; docs/benchmarks.md): a `.keras` save blocked training
4.6-4.8 s, a bundle written in place 1.7-2.3 s, a bundle started from a snapshot 0.01-0.03 s. The writer thread's
CPU per bundle: SaveV2 0.28-0.29 s (TensorFlow's software CRC32C of the data and a copy into its buffer beside the
kernel's copy into the page cache), raw bytes through the page cache 0.11-0.14 s, with O_DIRECT 0.02-0.03 s (the
disk reads the buffers). No checksum: zlib.crc32 would cost 0.24 s, a hardware CRC32C (google-crc32c) 0.08 s; the
index and the data file's size catch a bundle that is missing or cut short. `tf.train.Checkpoint`'s own async
option was tried: its second write fails with Keras 3 variables (Keras's `_copy_trackable_to_cpu` creates a
tf.Variable in a tf.function).
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import mmap
import os
import threading
from collections.abc import Callable, Iterator

import keras
import numpy as np
import tensorflow as tf

from nntrain import rundir
from nntrain.errors import NntrainError

DATA, INDEX = "tensors.data", "tensors.json"  # a bundle directory's files
FORMAT = "nntrain-bundle-1"
TF_PREFIX = "variables"  # TensorFlow-format bundles: variables.index, variables.data-00000-of-00001
TF_DATA_SUFFIX = ".data-00000-of-00001"
CHUNK = 64 << 20  # bytes handed to tf.io.gfile at a time (it takes bytes: a copy)


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


def _index(directory: str) -> dict[str, tuple[np.dtype, tuple[int, ...], int]]:
    """name: (dtype, shape, offset in the data file) of a bundle's tensors; ValueError if the index is damaged."""
    try:
        index = json.loads(rundir.read_text(rundir.join(directory, INDEX)))
        if index["format"] != FORMAT:
            raise ValueError(f"format {index['format']!r}, not {FORMAT}")
        return {tensor["name"]: (np.dtype(tf.as_dtype(tensor["dtype"]).as_numpy_dtype),
                                 tuple(int(n) for n in tensor["shape"]), int(tensor["offset"]))
                for tensor in index["tensors"]}
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"its index {INDEX} is damaged: {type(e).__name__}: {str(e)[:200]}") from None


def _nbytes(dtype: np.dtype, shape: tuple[int, ...]) -> int:
    return math.prod(shape) * dtype.itemsize


def _size(entries: dict[str, tuple[np.dtype, tuple[int, ...], int]]) -> int:
    """The data file's size that the index describes."""
    return max((offset + _nbytes(dtype, shape) for dtype, shape, offset in entries.values()), default=0)


def problem(directory: str) -> str | None:
    """Why the bundle in `directory` cannot be read (missing, damaged index, missing or short data file), or None."""
    if not rundir.exists(rundir.join(directory, INDEX)):
        return _tf_problem(directory)
    try:
        expected = _size(_index(directory))
    except ValueError as e:
        return str(e)
    data = rundir.join(directory, DATA)
    if not rundir.exists(data):
        return f"its data file {DATA} is missing"
    size = tf.io.gfile.stat(data).length
    return None if size == expected else f"its data file {DATA} holds {size:,} bytes, its index {expected:,}"


def _tf_problem(directory: str) -> str | None:
    path = rundir.join(directory, TF_PREFIX)
    if not rundir.exists(path + ".index"):
        return "missing"
    if not rundir.exists(path + TF_DATA_SUFFIX):
        return f"its data file {TF_PREFIX}{TF_DATA_SUFFIX} is missing"
    try:  # (tf.train.load_checkpoint does not find a bundle on ram://)
        tf.compat.v1.train.NewCheckpointReader(path)
    except (tf.errors.OpError, ValueError) as e:
        return f"not a readable checkpoint: {str(e).splitlines()[0][:200]}"
    return None


def shapes(directory: str) -> dict[str, list[int]]:
    """Each tensor's shape in the bundle, by name."""
    if rundir.exists(rundir.join(directory, INDEX)):
        return {name: list(shape) for name, (_, shape, _) in _index(directory).items()}
    return tf.compat.v1.train.NewCheckpointReader(rundir.join(directory, TF_PREFIX)).get_variable_to_shape_map()


def arrays(directory: str, names: list[str]) -> Iterator[np.ndarray]:
    """The bundle's tensors `names`, one at a time (host memory holds one tensor beyond the model)."""
    if not rundir.exists(rundir.join(directory, INDEX)):
        reader = tf.compat.v1.train.NewCheckpointReader(rundir.join(directory, TF_PREFIX))
        yield from (reader.get_tensor(name) for name in names)
        return
    entries = _index(directory)
    with tf.io.gfile.GFile(rundir.join(directory, DATA), "rb") as f:
        for name in names:
            dtype, shape, offset = entries[name]
            f.seek(offset)
            yield np.frombuffer(f.read(_nbytes(dtype, shape)), dtype).reshape(shape)


def load(directory: str) -> dict[str, np.ndarray]:
    """Every tensor of the bundle, by name (tests compare bundles with it)."""
    names = list(shapes(directory))
    return dict(zip(names, arrays(directory, names), strict=True))


class Mismatch(NntrainError):
    """The bundle holds other variables than the model (`group` "model") or its optimizer ("optimizer") has."""

    def __init__(self, group: str, detail: str):
        self.group = group
        super().__init__(detail)


def read(model: keras.Model, directory: str, optimizer: bool = True) -> None:
    """Assigns the bundle's values to the model's variables (and the optimizer's, which must be built).

    Mismatch if the bundle holds other variables than this model (or optimizer) has; nothing is assigned then.
    """
    names, variables = _named(model, optimizer)
    saved = shapes(directory)
    for group, _ in _groups(model, optimizer):
        wanted = {name: list(v.shape) for name, v in zip(names, variables) if name.startswith(f"{group}/")}
        held = {name: shape for name, shape in saved.items() if name.startswith(f"{group}/")}
        if held != wanted:
            first = next((n for n in wanted if held.get(n) != wanted[n]), None) or sorted(set(held) - set(wanted))[0]
            raise Mismatch(group, f"{first}: {held.get(first, 'absent')} in the checkpoint, "
                                  f"{wanted.get(first, 'absent')} here")
    for variable, value in zip(variables, arrays(directory, names), strict=True):
        variable.assign(value)


class Writer:
    """Writes bundles on one background thread, at most one in flight, at training's priority: the write needs
    little CPU but the thread must issue it at once (10 levels nicer, training waited longer for it: 1.41x-1.62x
    against 1.14x-1.15x at 50 M parameters under load, docs/benchmarks.md)."""

    def __init__(self) -> None:
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None

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
        self._thread = threading.Thread(target=self._write, args=(directory, names, tensors, checked, list(discard)),
                                        name="nntrain-checkpoint-writer", daemon=True)
        self._thread.start()

    def _write(self, directory: str, names: list[str], tensors: list[tf.Tensor],
               checked: list[tuple[str, tf.Tensor]], discard: list[str]) -> None:
        try:
            for path in discard:
                rundir.remove(path)
            _check_finite(checked, directory)
            checked.clear()  # lets go of the weights' buffers (`write` lets go of each once written)
            rundir.remove(directory)  # a killed writer's leftover of the same step
            rundir.makedirs(directory)
            write(directory, names, tensors)
        except BaseException as e:  # handed to the training thread by wait()
            self._error = e

    def busy(self) -> bool:
        """True while a write is in flight."""
        return self._thread is not None and self._thread.is_alive()

    def wait(self) -> bool:
        """Blocks until the write in flight has ended; raises its error. True if a write ended here."""
        if self._thread is None:
            return False
        self._thread.join()
        self._thread = None
        error, self._error = self._error, None
        if error is not None:
            raise error
        return True


def _check_finite(checked: list[tuple[str, tf.Tensor]], directory: str) -> None:
    for name, tensor in checked:
        rundir.check_finite(name, np.asarray(tensor), directory)  # the buffer (tensor.numpy() would copy it)


def write(directory: str, names: list[str], tensors: list[tf.Tensor]) -> None:
    """Writes `tensors` under `names` as the bundle in `directory`, the data first, and takes each tensor out of
    `tensors` once written (training then updates its variable with no copy). A module function: tests slow it."""
    entries = []
    with _data_file(rundir.join(directory, DATA)) as data:
        for name in names:
            tensor = tensors.pop(0)
            offset = data.append(np.asarray(tensor).reshape(-1).view(np.uint8))  # the snapshot's buffer, no copy
            entries.append({"name": name, "dtype": tensor.dtype.name, "shape": tensor.shape.as_list(),
                            "offset": offset})
            del tensor
    rundir.write_json(rundir.join(directory, INDEX), {"format": FORMAT, "tensors": entries})


class _DataFile:
    """Appends byte arrays through `sink` (which writes the whole of what it is given). With `align` > 1 (O_DIRECT)
    every write starts at a multiple of `align` in memory and in the file and is a multiple of it long: an array
    goes to an offset congruent to its address, so its aligned middle is written straight from its buffer, and only
    its first and last partial blocks (and the zero padding before it) through a staging block."""

    def __init__(self, sink: Callable[[memoryview], None], align: int):
        self._sink, self._align = sink, align
        self._block = mmap.mmap(-1, align)  # page-aligned
        self._fill = 0  # bytes staged in the block
        self.size = 0  # the file's size so far, staged bytes included

    def append(self, data: np.ndarray) -> int:
        """Appends the bytes of `data` (uint8, contiguous); returns their offset in the file."""
        address = data.ctypes.data
        self._stage(memoryview(bytes((address - self.size) % self._align)))
        offset = self.size
        head = min(data.size, -address % self._align)
        body = (data.size - head) // self._align * self._align
        self._stage(memoryview(data[:head]))
        if body:  # the staging block is empty here: the file is at an aligned offset, as is the buffer
            self._sink(memoryview(data[head:head + body]))
            self.size += body
        self._stage(memoryview(data[head + body:]))
        return offset

    def _stage(self, data: memoryview) -> None:
        while len(data):
            count = min(len(data), self._align - self._fill)
            self._block[self._fill:self._fill + count] = data[:count]
            self._fill, self.size, data = self._fill + count, self.size + count, data[count:]
            if self._fill == self._align:
                self._sink(memoryview(self._block))
                self._fill = 0

    def finish(self) -> None:
        """Writes the last staged block, zero-padded to a whole block (the caller truncates the file to `size`)."""
        if self._fill:
            self._block[self._fill:] = bytes(self._align - self._fill)
            self._sink(memoryview(self._block))


@contextlib.contextmanager
def _data_file(path: str) -> Iterator[_DataFile]:
    """A new data file at `path`. A local one is opened with O_DIRECT where the filesystem allows it (Linux): the
    disk reads the snapshot's buffers, so the write costs almost no CPU (0.02-0.03 s for 573 MiB, against 0.12 s
    through the page cache); tf.io.gfile (gs://, ram://) is handed bytes, CHUNK at a time (a copy)."""
    if not rundir.is_local(path):
        with tf.io.gfile.GFile(path, "wb") as f:
            yield _DataFile(lambda data: [f.write(bytes(data[start:start + CHUNK]))
                                          for start in range(0, len(data), CHUNK)], 1)
        return
    fd, align = _open_new(path)
    try:
        data = _DataFile(lambda view: _write_all(fd, view), align)
        yield data
        data.finish()
        os.ftruncate(fd, data.size)
    finally:
        os.close(fd)


def _open_new(path: str) -> tuple[int, int]:
    """(file descriptor, alignment its writes need) of a new local file: O_DIRECT where allowed."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    if hasattr(os, "O_DIRECT"):
        try:
            return os.open(path, flags | os.O_DIRECT, 0o644), mmap.PAGESIZE
        except OSError as e:
            if e.errno != errno.EINVAL:  # EINVAL: this filesystem has no O_DIRECT
                raise
    return os.open(path, flags, 0o644), 1


def _write_all(fd: int, view: memoryview) -> None:
    while len(view):
        view = view[os.write(fd, view):]


def host_bytes(model: keras.Model) -> int:
    """Bytes of every variable a bundle holds (model and optimizer)."""
    return sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for _, group in _groups(model) for v in group)
