"""`model.init_from`: start a run from the weights of another run (or any .keras model) instead of random ones.

Every layer whose name (its path, inside nested models such as the backbone) and weight shapes match gets the
source's weights; the rest keep their fresh initialization: a head for another number of classes is so replaced.
A run that resumes restores its own checkpoint and never reads `init_from` again (trainer.prepare).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import keras
import numpy as np

from nntrain import artifacts, rundir
from nntrain.errors import NntrainError
from nntrain.logs import log


@dataclasses.dataclass(frozen=True)
class Loaded:
    """Tensors (weight variables) of the source copied into the model, of the source not used, and of the model
    left at their initialization; the layers of the last two."""

    loaded: int
    skipped: int
    new: int
    skipped_layers: tuple[str, ...] = ()
    new_layers: tuple[str, ...] = ()


def source_model(init_from: str) -> keras.Model:
    """The model `init_from` names: a run directory's model (final, else its latest checkpoint) or a .keras file."""
    where = f"config.model.init_from={init_from!r}"
    if init_from.endswith(".keras"):
        problem = rundir.keras_file_problem(init_from)
        if problem:
            raise NntrainError(f"{where}: {'no such file' if problem == 'missing' else problem}: give a .keras "
                               "file or a run directory")
        try:
            return keras.saving.load_model(init_from, compile=False)
        except (ValueError, OSError, KeyError, TypeError) as e:
            raise NntrainError(f"{where}: Keras cannot load it ({str(e).splitlines()[0][:200]})") from e
    if not rundir.exists(rundir.join(init_from, rundir.CONFIG)):
        raise NntrainError(f"{where} is neither a run directory (no {rundir.CONFIG} in it) nor a .keras file")
    try:
        return artifacts.load_model(init_from)
    except NntrainError as e:
        raise NntrainError(f"{where}: {e}") from e


def apply(model: keras.Model, init_from: str) -> Loaded:
    """Copies the weights of `init_from`'s layers into `model`'s layers of the same name and shapes; logs counts.

    NntrainError if no layer matches (the source is another kind of model).
    """
    source = dict(_layers(source_model(init_from)))
    loaded = new = 0
    used, new_layers = set(), []
    for path, layer in _layers(model):
        match = source.get(path)
        if match is not None and _shapes(match) == _shapes(layer):
            layer.set_weights([np.asarray(w) for w in match.get_weights()])
            loaded += len(layer.weights)
            used.add(path)
        else:
            new += len(layer.weights)
            new_layers.append(path)
    skipped_layers = [path for path in source if path not in used]
    result = Loaded(loaded, sum(len(source[path].weights) for path in skipped_layers), new,
                    tuple(skipped_layers), tuple(new_layers))
    if not loaded:
        raise NntrainError(f"config.model.init_from={init_from!r} shares no layer (by name and shape) with "
                           f"model '{model.name}': start from a run of the same model.name, or set it to ''")
    log(f"init_from {init_from}: {result.loaded} tensors loaded, {result.skipped} skipped"
        f"{_names(skipped_layers)}, {result.new} new{_names(new_layers)}")
    return result


def _layers(model: keras.Model, prefix: str = "") -> Iterator[tuple[str, keras.layers.Layer]]:
    """(path, layer) of every layer with weights; nested models are walked into (`backbone/conv`)."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _layers(layer, f"{prefix}{layer.name}/")
        elif layer.weights:
            yield f"{prefix}{layer.name}", layer


def _shapes(layer: keras.layers.Layer) -> list[tuple[int, ...]]:
    return [tuple(w.shape) for w in layer.weights]


def _names(paths: list[str], shown: int = 3) -> str:
    if not paths:
        return ""
    more = f" and {len(paths) - shown} more" if len(paths) > shown else ""
    return f" ({', '.join(paths[:shown])}{more})"
