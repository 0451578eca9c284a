"""mlp: Flatten, then Dense -> [BatchNorm] -> activation -> [Dropout] per hidden layer, then the head.

Reads model.hidden_sizes, activation, dropout, l1, l2 (L1L2 on every Dense kernel, head included), batch_norm.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import blocks, fields, heads


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """The outputs of a multi-layer perceptron on `inputs` (any shape, flattened first)."""
    fields.require_input(spec, "mlp", "float features")
    hidden_sizes = fields.positive_ints(model_config, "hidden_sizes")
    activation = fields.activation(model_config)
    dropout = fields.rate(model_config, "dropout")
    kernel_regularizer = blocks.regularizer(fields.non_negative(model_config, "l1"),
                                            fields.non_negative(model_config, "l2"))
    batch_norm = fields.flag(model_config, "batch_norm")
    x = keras.layers.Flatten()(inputs)
    for units in hidden_sizes:
        x = keras.layers.Dense(units, use_bias=not batch_norm, kernel_regularizer=kernel_regularizer)(x)
        x = blocks.normalize_activate(x, activation, batch_norm)
        x = blocks.dropout(x, dropout)
    return heads.output(x, model_config, spec, kernel_regularizer)
