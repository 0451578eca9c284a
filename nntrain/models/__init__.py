"""Model builders: `build(model_config, spec)` makes the uncompiled keras.Model that `model_config.name` names.

Each builder reads only `model_config` and `spec` (keras-tuner fills a copy of the config and calls `build`).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError
from nntrain.models import cnn, gpt, mlp, resnet, transformer

Builder = Callable[[keras.KerasTensor, ml_collections.ConfigDict, DatasetSpec], keras.KerasTensor]

# model.name -> function from the input tensor, model config and data spec to the output tensor.
BUILDERS: dict[str, Builder] = {
    "mlp": mlp.build,
    "cnn": cnn.build,
    "resnet": resnet.build,
    "transformer": transformer.build,
    "gpt": gpt.build,
}


def names() -> list[str]:
    """The model names `model.name` accepts."""
    return sorted(BUILDERS)


def build(model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.Model:
    """The uncompiled model `model_config.name` names, with an explicit Input of the spec's shape and dtype.

    Call it inside `strategy.scope()` to place its variables; raises NntrainError for a bad model config.
    """
    name = model_config.get("name")
    builder = BUILDERS.get(name) if isinstance(name, str) else None
    if builder is None:
        close = difflib.get_close_matches(str(name), names(), n=1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise NntrainError(f"unknown model config.model.name={name!r}: {hint}available: {', '.join(names())}")
    inputs = keras.Input(shape=tuple(spec.input_shape), dtype=spec.input_dtype, name="features")
    return keras.Model(inputs, builder(inputs, model_config, spec), name=name)
