"""The output layer every model ends with: float32 under any mixed-precision policy."""

from __future__ import annotations

import keras
import ml_collections

from nntrain.config import HEADS
from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError
from nntrain.models import fields

NAME = "predictions"  # the output layer's name


def output(x: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec,
           kernel_regularizer: keras.regularizers.Regularizer | None = None) -> keras.KerasTensor:
    """`model.head`: classification (softmax over spec.num_classes), binary (one sigmoid unit) or
    regression (`model.num_outputs` linear units). Outputs are probabilities, not logits."""
    units, activation = _units_and_activation(model_config, spec)
    return keras.layers.Dense(units, activation=activation, kernel_regularizer=kernel_regularizer,
                              dtype="float32", name=NAME)(x)


def units(model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> int:
    """The output units `model.head` needs on data of `spec`."""
    return _units_and_activation(model_config, spec)[0]


def _units_and_activation(model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> tuple[int, str]:
    head = fields.choice(model_config, "head", HEADS)
    if head == "regression":
        return fields.positive_int(model_config, "num_outputs"), "linear"
    if head == "binary":
        if spec.num_classes is not None and spec.num_classes > 2:
            raise fields.bad("head", head, f"the data has {spec.num_classes} classes: use 'classification'")
        return 1, "sigmoid"
    if spec.num_classes is None or spec.num_classes < 2:
        raise NntrainError(f"config.model.head='classification' needs data with num_classes >= 2, but it has "
                           f"num_classes={spec.num_classes}: use head 'regression' for numeric targets "
                           "or 'binary' for one 0/1 target")
    return spec.num_classes, "softmax"
