"""Work-around for a cache miss in Keras's saving (`keras/src/saving/saving_lib.py`, Keras 3.15).

`get_attr_skipset(obj_type)` is meant to compute, once per process, the attribute names a save walk skips, but
it reads its cache under the key `saving_attr_skiplist_{obj_type}` and writes it under `saving_attr_skipset_...`.
So every `model.save` builds throwaway `Layer`, `Operation`, `Metric` and `Optimizer` objects to recompute the
sets: ~17 ms of a ~45 ms mnist_mlp save, paid by every per-epoch checkpoint. The sets come from `dir()` of those
base classes, the same all process long, so `patch()` keeps the first result of each.

Delete this module, and its call in `nntrain/rundir.py`, once Keras reads and writes the same key:
`tests/test_training.py::test_keras_attribute_skipsets_are_computed_once` then passes without it.
"""

from __future__ import annotations

import functools

from keras.src.saving import saving_lib


def patch() -> None:
    """Makes `saving_lib.get_attr_skipset` compute each type's set once; idempotent."""
    if not hasattr(saving_lib.get_attr_skipset, "cache_info"):  # not wrapped by functools.cache yet
        saving_lib.get_attr_skipset = functools.cache(saving_lib.get_attr_skipset)
