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
    class_names: tuple[str, ...] | None = None  # class i's name, where the source has names


def save(spec: DatasetSpec, model_dir: str) -> str:
    """Writes the spec (shapes, split sizes, class names) into a run's directory as dataset.json; returns the path."""
    from nntrain import rundir  # TensorFlow and Keras: only once a run writes

    path = rundir.join(model_dir, rundir.DATASET)
    rundir.write_json(path, dataclasses.asdict(spec))
    return path


def copy_saved(model_dir: str, export_dir: str) -> None:
    """Copies a run's dataset.json (class names, shapes) into an export, where the run has one."""
    from nntrain import rundir

    path = rundir.join(model_dir, rundir.DATASET)
    if rundir.exists(path):
        rundir.copy(path, rundir.join(export_dir, rundir.DATASET))
