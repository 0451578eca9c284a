"""TensorFlow's op and kernel registries, which have no public Python API (no upstream issue asks for one).

- `has_kernels(op)`: whether any device has a kernel for `op`; `doctor` asks it about `ConfigureDistributedTPU`
  (present only with tensorflow-tpu). Public alternatives fail late: running the op raises
  "No OpKernel was registered to support Op ...".
- `op_def(op)`: the OpDef of an op type (argument dtypes); `preflight` uses it to find string ops, which
  cannot run on a TPU.

`tests/test_compat.py::test_tensorflow_registries_answer_as_nntrain_expects` fails when TensorFlow moves them.
"""

from __future__ import annotations

from tensorflow.core.framework import op_def_pb2
from tensorflow.python.framework import kernels, op_def_registry


def has_kernels(op: str) -> bool:
    """True if some device has a kernel registered for the op type `op`."""
    return bool(kernels.get_registered_kernels_for_op(op).kernel)


def op_def(op: str) -> op_def_pb2.OpDef | None:
    """The registered OpDef of the op type `op` (None for an unknown op)."""
    return op_def_registry.get(op)
