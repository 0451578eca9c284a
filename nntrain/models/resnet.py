"""resnet: ResNet v1 for CIFAR (He et al. 2016, sec. 4.2).

A 3x3 conv, then 3 stages of n basic blocks (two 3x3 convs with BatchNorm, ReLU after the addition) with
width, 2*width and 4*width filters (the first block of stages 2 and 3 strides by 2), global average
pooling and the head: depth = 6n + 2 layers with weights. Shortcuts are identities; where the shape
changes they subsample and zero-pad the channels (the paper's option A, no parameters), so ResNet-20 has
exactly 19 conv layers and 0.27M parameters.

Reads model.depth, width, l2 (L2 on every conv and Dense kernel).
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import blocks, fields, heads


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """The outputs of a CIFAR-style ResNet v1 on images (height, width, channels)."""
    fields.require_input(spec, "resnet", "float images of shape (height, width, channels)", rank=3)
    depth = fields.positive_int(model_config, "depth")
    if depth < 8 or (depth - 2) % 6:
        raise fields.bad("depth", depth, "use 6n+2, e.g. 20, 32, 44")
    width = fields.positive_int(model_config, "width")
    kernel_regularizer = blocks.regularizer(0.0, fields.non_negative(model_config, "l2"))
    x = blocks.normalize_activate(_conv(inputs, width, 1, kernel_regularizer), "relu", batch_norm=True)
    for stage in range(3):
        for block in range((depth - 2) // 6):
            strides = 2 if stage > 0 and block == 0 else 1
            x = _basic_block(x, width * 2**stage, strides, kernel_regularizer)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return heads.output(x, model_config, spec, kernel_regularizer)


def _conv(x: keras.KerasTensor, filters: int, strides: int,
          kernel_regularizer: keras.regularizers.Regularizer | None) -> keras.KerasTensor:
    return keras.layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                               kernel_initializer="he_normal", kernel_regularizer=kernel_regularizer)(x)


def _basic_block(x: keras.KerasTensor, filters: int, strides: int,
                 kernel_regularizer: keras.regularizers.Regularizer | None) -> keras.KerasTensor:
    y = blocks.normalize_activate(_conv(x, filters, strides, kernel_regularizer), "relu", batch_norm=True)
    y = keras.layers.BatchNormalization()(_conv(y, filters, 1, kernel_regularizer))
    shortcut = x if strides == 1 else _subsample_and_pad(x)
    return keras.layers.Activation("relu")(keras.layers.Add()([y, shortcut]))


def _subsample_and_pad(x: keras.KerasTensor) -> keras.KerasTensor:
    """Option A shortcut: every second pixel in each direction, channels doubled with zeros."""
    x = keras.layers.MaxPooling2D(pool_size=1, strides=2)(x)
    return keras.layers.Concatenate()([x, keras.layers.Rescaling(0.0)(x)])
