"""What a model needs to know about its data."""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf

from nntrain.files import write_text_atomic


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """Shape and type of one example, and the size of each split."""

    input_shape: tuple[int, ...]  # one example's features, e.g. (28, 28, 1); (sequence_length,) for text
    input_dtype: str  # "float32" for numbers and images, "int32" for token ids
    num_classes: int | None  # None for regression targets
    train_examples: int
    eval_examples: int | None = None
    vocab_size: int | None = None  # text sources only
    class_names: tuple[str, ...] | None = None  # class i's name, where the source has names


SPEC_FILE = "dataset.json"


def save(spec: DatasetSpec, model_dir: str) -> str:
    """Writes the spec (shapes, split sizes, class names) into a run's directory as dataset.json; returns the path."""
    path = os.path.join(model_dir, SPEC_FILE)
    write_text_atomic(path, json.dumps(dataclasses.asdict(spec), indent=2, sort_keys=True) + "\n")
    return path


def copy_saved(model_dir: str, export_dir: str) -> None:
    """Copies a run's dataset.json (class names, shapes) into an export, where the run has one."""
    path = os.path.join(model_dir, SPEC_FILE)
    if tf.io.gfile.exists(path):
        tf.io.gfile.copy(path, os.path.join(export_dir, SPEC_FILE))
