"""TFDS split syntax (`train`, `test[:8000]`, `train[:90%]`, `train[10%:]+test[:5]`) for every source."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Mapping

import numpy as np
import tensorflow as tf

from nntrain.errors import NntrainError

EXAMPLES = "train, test[:8000], train[:90%], train[10%:]+test[:5]"
_ADDITION = re.compile(r"\s*\+\s*")  # TFDS's separator of added splits
_PLAIN_PART = re.compile(r"(?P<name>[\w-]+)(?P<slice>\[(?P<start>-?\d+)?:(?P<stop>-?\d+)?\])?")


@dataclasses.dataclass(frozen=True)
class Split:
    """The examples one split spec selects: unbatched `(features, label)` in their stored dtypes."""

    dataset: tf.data.Dataset
    num_examples: int | None  # None: not counted yet (see `count`)
    cacheable: bool = True  # False where caching would only copy a cheap generator (synthetic data)
    # Read from files: their names, and `shard(n, i, seed)`: pipeline i's examples from every n-th file (for
    # record files: in the order `seed` shuffles them to when not None, the same on every iteration; an int or a
    # scalar tensor: each train pass passes its own, data/stream.py).
    files: tuple[str, ...] = ()
    shard: Callable[[int, int, int | tf.Tensor | None], tf.data.Dataset] | None = None
    count: Callable[[], int] | None = None  # a full pass over the files, for num_examples None
    # Held in memory (arrays, npz, IDX, CSV): the examples as (features, labels) array slices, in order, which the
    # data checks read instead of a pass through tf.data.
    arrays: tuple[tuple[np.ndarray, np.ndarray], ...] = ()

    def counted(self) -> Split:
        """This split with its examples counted, by a full pass when they were not known."""
        return self if self.num_examples is not None else dataclasses.replace(self, num_examples=self.count())


@dataclasses.dataclass(frozen=True)
class _SplitInfo:
    """The two fields of `tfds.core.SplitInfo` that `ReadInstruction.to_absolute` reads."""

    num_examples: int

    @property
    def shard_lengths(self) -> list[int]:
        return [self.num_examples]  # one shard per split


class _SplitInfos(Mapping):
    """Split sizes seen as the split infos TFDS expects; lookups stay lazy for lazily counted sources."""

    def __init__(self, sizes: Mapping[str, int]):
        self._sizes = sizes

    def __getitem__(self, name: str) -> _SplitInfo:
        return _SplitInfo(self._sizes[name])

    def __iter__(self) -> Iterator[str]:
        return iter(self._sizes)

    def __len__(self) -> int:
        return len(self._sizes)


def bad_split(spec: str, source: str, error: Exception) -> NntrainError:
    """The one-line error for a split spec TFDS could not parse or resolve."""
    reason = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
    return NntrainError(f"bad split '{spec}' for data.source={source}: {reason} "
                        f"(write splits like {EXAMPLES})")


def ranges(spec: str, sizes: Mapping[str, int], source: str) -> list[tuple[str, int, int]]:
    """Resolves a split spec to `(split name, start, stop)` index ranges over the named splits."""
    plain = _plain_ranges(spec, sizes)
    return plain if plain is not None else _tfds_ranges(spec, sizes, source)


def _plain_ranges(spec: str, sizes: Mapping[str, int]) -> list[tuple[str, int, int]] | None:
    """Whole splits and slices by example index (`test[:8000]`, `train+test[-5:]`), resolved as TFDS resolves them
    but without importing TFDS (0.1 s of CPU, with tqdm, etils, fsspec); None for everything else (percentages,
    shards, any mistake), which `_tfds_ranges` resolves or explains. tests/test_fuzz.py checks that both agree."""
    result = []
    for part in _ADDITION.split(spec):
        match = _PLAIN_PART.fullmatch(part)
        if not match or match["name"] == "all" or match["name"] not in sizes:
            return None
        size = sizes[match["name"]]
        start, stop = (int(v) if v is not None else None for v in (match["start"], match["stop"]))
        if match["slice"] and start is None and stop is None:  # `train[:]`: TFDS's error
            return None
        if any(bound is not None and abs(bound) > size for bound in (start, stop)):  # TFDS's error
            return None
        indices = range(size)[start:stop]
        result.append((match["name"], indices.start, max(indices.stop, indices.start)))
    return result


def _tfds_ranges(spec: str, sizes: Mapping[str, int], source: str) -> list[tuple[str, int, int]]:
    from tensorflow_datasets.core import ReadInstruction  # lazy: TFDS is slow to import

    try:
        instructions = ReadInstruction.from_spec(spec).to_absolute(_SplitInfos(sizes))
    except (ValueError, NotImplementedError) as e:
        raise bad_split(spec, source, e) from e
    result = []
    for instruction in instructions:
        indices = range(sizes[instruction.splitname])[instruction.from_:instruction.to]
        result.append((instruction.splitname, indices.start, max(indices.stop, indices.start)))
    return result
