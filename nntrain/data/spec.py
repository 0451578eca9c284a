"""What a model needs to know about its data."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Shape and type of one example, and the size of each split."""

    input_shape: tuple[int, ...]  # one example's features, e.g. (28, 28, 1); (sequence_length,) for text
    input_dtype: str  # "float32" for numbers and images, "int32" for token ids
    num_classes: int | None  # None for regression targets
    train_examples: int
    eval_examples: int | None = None
    vocab_size: int | None = None  # text sources only
