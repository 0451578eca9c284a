"""Model builders: `build(model_config, spec)` makes the uncompiled keras.Model that `model_config.name` names.

Each builder reads only `model_config` and `spec` (keras-tuner fills a copy of the config and calls `build`).

Owns the builders and the output heads. The package may import the foundation (`errors`, `logs`, `quiet`,
`compat`, `rundir`), `registry`, `config`, `distribute` and `data` (the DatasetSpec); never `run` or anything above.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError
from nntrain.models import heads
from nntrain.registry import MODELS, experiment_model_call

Builder = Callable[[keras.KerasTensor, ml_collections.ConfigDict, DatasetSpec], keras.KerasTensor]

# model.name -> function from the input tensor, model config and data spec to the output tensor, one line each;
# nntrain.register_model adds more.
MODELS.add("mlp", "nntrain.models.mlp:build")
MODELS.add("cnn", "nntrain.models.cnn:build")
MODELS.add("resnet", "nntrain.models.resnet:build")
MODELS.add("transformer", "nntrain.models.transformer:build")
MODELS.add("gpt", "nntrain.models.gpt:build")
MODELS.add("backbone", "nntrain.models.backbone:build")

# Keys a builder gained after runs were saved without them, and what their absence builds: the architecture those
# runs had (gpt's feed-forward was GELU before model.ff_activation, its queries, keys and values separate
# projections before model.fused_qkv).
ADDED_KEYS = {"gpt": {"ff_activation": "gelu", "fused_qkv": False}}


def names() -> list[str]:
    """The model names `model.name` accepts."""
    return MODELS.names()


def as_built(model_config: dict) -> dict:
    """A saved model config with the keys its builder gained since filled in as their absence builds, so that a
    run saved before a key existed compares equal to a config that sets the key to that value."""
    return {**ADDED_KEYS.get(model_config.get("name"), {}), **model_config}


def build(model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.Model:
    """The uncompiled model `model_config.name` names, with an explicit Input of the spec's shape and dtype.

    Call it inside `strategy.scope()` to place its variables; raises NntrainError for a bad model config.
    """
    name = model_config.get("name")
    builder = MODELS.get(name)
    inputs = keras.Input(shape=tuple(spec.input_shape), dtype=spec.input_dtype, name="features")
    outputs = builder(inputs, model_config, spec)
    if getattr(builder, "experiment", None) is not None:  # an experiment file's get_model (registry)
        _check_units(builder.experiment, outputs, model_config, spec)
    return keras.Model(inputs, outputs, name=str(name).replace(".", "_"))


def _check_units(experiment: str, outputs, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> None:
    """An experiment's own model ends in the units its head needs (else the loss fails in fit, after the run's
    first files)."""
    shape, units = getattr(outputs, "shape", None), heads.units(model_config, spec)
    if isinstance(outputs, keras.KerasTensor) and shape[-1] != units:
        raise NntrainError(f"{experiment_model_call(experiment)} returned a model of output shape {shape}, but "
                           f"model.head='{model_config.get('head')}' on this data needs {units} units: end it with "
                           "nntrain.models.heads.output(x, config.model, spec)")
