"""`model.init_from`: start a run from the weights of another run (or any .keras model) instead of random ones.

Every layer whose name (its path, inside nested models such as the backbone) and weight shapes match gets the
source's weights; the rest keep their fresh initialization: a head for another number of classes is so replaced,
and so is a head for other classes (a run's dataset.json names them: digits 0-4 are not digits 5-9).
Keras numbers the names it makes up per process (`conv2d_4` is the 5th Conv2D built so far), so a name's
number is read as its place among the model's layers of that name: the n-th `conv2d` matches the n-th.
A run that resumes restores its own checkpoint and never reads `init_from` again (trainer.prepare).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator

import keras
import numpy as np

from nntrain import rundir
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.models import heads
from nntrain.run import checkpoints, runstate


@dataclasses.dataclass(frozen=True)
class Loaded:
    """Tensors (weight variables) of the source copied into the model, of the source not used, and of the model
    left at their initialization; the layers of the last two."""

    loaded: int
    skipped: int
    new: int
    skipped_layers: tuple[str, ...] = ()
    new_layers: tuple[str, ...] = ()


def source_model(init_from: str) -> tuple[keras.Model, tuple[str, ...] | None]:
    """The model `init_from` names, a run directory's (model.keras, else its latest checkpoint) or a .keras file,
    and the names of the classes it was trained on (None: not known)."""
    where = f"config.model.init_from={init_from!r}"
    path, class_names = init_from, None
    if not init_from.endswith(".keras"):
        if not rundir.exists(rundir.join(init_from, rundir.CONFIG)):
            raise NntrainError(f"{where} is neither a run directory (no {rundir.CONFIG} in it) nor a .keras file")
        path = rundir.join(init_from, rundir.FINAL_MODEL)
        latest = checkpoints.latest_checkpoint(rundir.checkpoint_dir(init_from))
        if not rundir.exists(path) and latest:
            path = latest[0]
        names = (runstate.RunState.load(init_from).spec or {}).get("class_names")
        class_names = tuple(names) if names else None
    problem = rundir.keras_file_problem(path)
    if problem == "missing" and path != init_from:
        raise NntrainError(f"{where}: the run has no model yet (no {rundir.FINAL_MODEL}, no checkpoint): train it "
                           "first")
    if problem:
        raise NntrainError(f"{where}: {path} is {'not there' if problem == 'missing' else problem}: give a .keras "
                           "file or a run directory")
    try:
        return keras.saving.load_model(path, compile=False), class_names
    except (ValueError, OSError, KeyError, TypeError) as e:
        raise NntrainError(f"{where}: Keras cannot load {path} ({str(e).splitlines()[0][:200]})") from e


def apply(model: keras.Model, init_from: str, class_names: tuple[str, ...] | None = None) -> Loaded:
    """Copies the weights of `init_from`'s layers into `model`'s layers of the same name and shapes, the head
    (heads.NAME) only if it was trained on the same `class_names` (where both are known); logs the counts.

    NntrainError if no layer matches (the source is another kind of model).
    """
    trained, trained_classes = source_model(init_from)
    source = dict(_layers(trained))
    other_classes = bool(class_names and trained_classes and tuple(class_names) != trained_classes)
    used, new_layers = set(), []
    for path, layer in _layers(model):
        match = source.get(path)
        if match is not None and _shapes(match) == _shapes(layer) and not (other_classes and _is_head(path)):
            layer.set_weights([np.asarray(w) for w in match.get_weights()])
            used.add(path)
        else:
            new_layers.append(path)
    skipped_layers = [path for path in source if path not in used]
    result = Loaded(loaded=sum(len(source[path].weights) for path in used),
                    skipped=sum(len(source[path].weights) for path in skipped_layers),
                    new=sum(len(layer.weights) for path, layer in _layers(model) if path in new_layers),
                    skipped_layers=tuple(skipped_layers), new_layers=tuple(new_layers))
    loaded = result.loaded
    if not loaded:
        raise NntrainError(f"config.model.init_from={init_from!r} shares no layer (by name and shape) with "
                           f"model '{model.name}': start from a run of the same model.name, or set it to ''")
    log(f"init_from {init_from}: {result.loaded} tensors loaded, {result.skipped} skipped"
        f"{_names(skipped_layers)}, {result.new} new{_names(new_layers)}")
    return result


def _layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer with weights, nested models walked into (`backbone/conv`); a path names a
    layer by its name without Keras's number and its place among the layers so named (`conv2d_4` -> `conv2d:0`)."""
    seen: dict[str, int] = {}
    for layer in model.layers:
        base = re.sub(r"_\d+$", "", layer.name)
        path = f"{prefix}{base}:{seen.get(base, 0)}"
        seen[base] = seen.get(base, 0) + 1
        if isinstance(layer, keras.Model):
            yield from _layers(layer, f"{path}/")
        elif layer.weights:
            yield path, layer


def _is_head(path: str) -> bool:
    return path == f"{heads.NAME}:0"


def _shapes(layer: keras.layers.Layer) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in layer.weights]


def _names(paths: list[str], shown: int = 3) -> str:
    if not paths:
        return ""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f" ({', '.join(paths[:shown])}{more})"
