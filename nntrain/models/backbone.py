"""backbone: a Keras Applications network (without its ImageNet classifier) -> pooling -> [Dropout] -> head.

The backbone's own input scaling is the model's first layer, so the model takes images in [0, 1] as every nntrain
image model does (and the serving export raw uint8 images). The backbone is the nested model named `backbone`
(`finetune.*` freezes and unfreezes it).

Reads model.backbone (one of BACKBONES), backbone_weights (imagenet | none | PATH to a .weights.h5, .h5 or .keras
file of the backbone without its top), pooling (avg | max), dropout. `imagenet` weights are read from Keras's
cache only (~/.keras/models/): a missing file is an error naming the file and its URL; nothing is downloaded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import keras
import ml_collections
import tensorflow as tf

from nntrain.compat import keras_applications
from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError
from nntrain.models import blocks, fields, heads

NAME = "backbone"  # the nested model's name
POOLINGS = ("avg", "max")
WEIGHT_FILES = (".weights.h5", ".h5", ".keras")


@dataclasses.dataclass(frozen=True)
class Application:
    """A Keras Applications network and the input scaling its weights expect, from images in [0, 1]."""

    constructor: Callable[..., keras.Model]
    scale: float
    offset: float = 0.0
    own_preprocessing: bool = True  # built with include_preprocessing=True: it normalizes 0..255 itself


_apps = keras.applications
BACKBONES = {"MobileNetV3Small": Application(_apps.MobileNetV3Small, 255.0),
             "MobileNetV3Large": Application(_apps.MobileNetV3Large, 255.0),
             "EfficientNetV2B0": Application(_apps.EfficientNetV2B0, 255.0),
             "ConvNeXtTiny": Application(_apps.ConvNeXtTiny, 255.0),
             "ResNet50V2": Application(_apps.ResNet50V2, 2.0, -1.0, own_preprocessing=False)}  # expects -1..1


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """The outputs of a Keras Applications backbone on images (height, width, channels) in [0, 1]."""
    fields.require_input(spec, "backbone", "float images of shape (height, width, channels)", rank=3)
    name = fields.choice(model_config, "backbone", BACKBONES)
    weights = fields.get(model_config, "backbone_weights")
    pooling = fields.choice(model_config, "pooling", POOLINGS)
    dropout = fields.rate(model_config, "dropout")
    network = backbone(name, weights, tuple(spec.input_shape))
    app = BACKBONES[name]
    x = keras.layers.Rescaling(app.scale, app.offset, name="backbone_scaling")(inputs)
    x = network(x)
    x = (keras.layers.GlobalAveragePooling2D if pooling == "avg" else keras.layers.GlobalMaxPooling2D)()(x)
    x = blocks.dropout(x, dropout)
    return heads.output(x, model_config, spec)


def backbone(name: str, weights: str, input_shape: tuple[int, int, int]) -> keras.Model:
    """Application `name` without its classifier, named NAME, with `weights`: imagenet (from Keras's cache
    only), none, or a weights file."""
    app = BACKBONES[name]
    kind = str(weights).lower()
    pretrained = kind != "none"
    if pretrained and input_shape[-1] != 3:
        raise NntrainError(f"config.model.backbone_weights={weights!r} holds weights for RGB images, but the data "
                           f"has {input_shape[-1]} channel(s): set --config.data.channels=3 (images: sources) or "
                           "--config.model.backbone_weights=none")
    kwargs = {"include_top": False, "input_shape": input_shape,
              **({"include_preprocessing": True} if app.own_preprocessing else {})}
    if kind == "imagenet":
        with keras_applications.cached_weights_only(f"{name}'s ImageNet weights (model.backbone_weights=imagenet)"):
            try:
                network = app.constructor(weights="imagenet", **kwargs)
            except ValueError as e:  # e.g. a size the weights do not fit
                raise NntrainError(f"config.model.backbone={name} with imagenet weights: {e}") from e
    else:
        network = app.constructor(weights=None, **kwargs)
        if pretrained:
            load_weights(network, str(weights), name)
    # Named NAME by wrapping: some applications look their architecture up by their `name` argument.
    return keras.Model(network.input, network.output, name=NAME)


def load_weights(network: keras.Model, path: str, name: str) -> None:
    """Loads a weights file of the backbone (as `save_weights` writes it); one NntrainError if it does not fit."""
    if not path.endswith(WEIGHT_FILES):
        raise fields.bad("backbone_weights", path, f"use imagenet, none or a path ending in {', '.join(WEIGHT_FILES)}")
    if not tf.io.gfile.exists(path):
        raise fields.bad("backbone_weights", path, "no such file")
    try:
        network.load_weights(path)
    except (ValueError, OSError, KeyError, TypeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        raise NntrainError(f"config.model.backbone_weights={path!r} does not fit {name} without its top on "
                           f"{network.input_shape[1:]} images ({type(e).__name__}: {first}): save it from "
                           f"keras.applications.{name}(include_top=False, weights=None).save_weights(...)") from e
