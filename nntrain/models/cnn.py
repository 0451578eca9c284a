"""cnn: per entry of model.filters a block Conv2D -> [BatchNorm] -> activation -> MaxPool(2), then
Flatten -> Dense(dense_units) -> activation -> [Dropout] -> head.

Reads model.filters, kernel_size, dense_units, dropout, batch_norm, activation.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import blocks, fields, heads


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """The outputs of a small convolutional network on images (height, width, channels)."""
    fields.require_input(spec, "cnn", "float images of shape (height, width, channels)", rank=3)
    filters = fields.positive_ints(model_config, "filters")
    kernel_size = fields.positive_int(model_config, "kernel_size")
    dense_units = fields.positive_int(model_config, "dense_units")
    dropout = fields.rate(model_config, "dropout")
    batch_norm = fields.flag(model_config, "batch_norm")
    activation = fields.activation(model_config)
    x = inputs
    for n in filters:
        x = keras.layers.Conv2D(n, kernel_size, padding="same", use_bias=not batch_norm)(x)
        x = blocks.normalize_activate(x, activation, batch_norm)
        # "same" pooling never shrinks a side below 1, so any number of blocks fits any image size.
        x = keras.layers.MaxPooling2D(padding="same")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(dense_units, activation=activation)(x)
    x = blocks.dropout(x, dropout)
    return heads.output(x, model_config, spec)
