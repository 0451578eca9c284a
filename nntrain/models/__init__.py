"""Model builders: `build(model_config, spec)` makes the uncompiled keras.Model that `model_config.name` names.

Each builder reads only `model_config` and `spec` (keras-tuner fills a copy of the config and calls `build`).
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import backbone, cnn, gpt, mlp, resnet, transformer
from nntrain.registry import MODELS

Builder = Callable[[keras.KerasTensor, ml_collections.ConfigDict, DatasetSpec], keras.KerasTensor]

# model.name -> function from the input tensor, model config and data spec to the output tensor;
# nntrain.register_model adds more.
for _name, _builder in {"mlp": mlp.build, "cnn": cnn.build, "resnet": resnet.build,
                        "transformer": transformer.build, "gpt": gpt.build,
                        "backbone": backbone.build}.items():
    MODELS.register(_name)(_builder)


def names() -> list[str]:
    """The model names `model.name` accepts."""
    return MODELS.names()


def build(model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.Model:
    """The uncompiled model `model_config.name` names, with an explicit Input of the spec's shape and dtype.

    Call it inside `strategy.scope()` to place its variables; raises NntrainError for a bad model config.
    """
    name = model_config.get("name")
    builder = MODELS.get(name)
    inputs = keras.Input(shape=tuple(spec.input_shape), dtype=spec.input_dtype, name="features")
    return keras.Model(inputs, builder(inputs, model_config, spec), name=str(name).replace(".", "_"))
