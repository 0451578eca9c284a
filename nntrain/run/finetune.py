"""Two-phase fine-tuning (`finetune.*`), as the Keras transfer-learning guide does it.

The backbone is a model's nested `backbone` model (models/backbone.py), else every layer but the head. For the
first `finetune.freeze_epochs` epochs only the rest of the model trains: the backbone is frozen, its
BatchNormalization layers in inference mode. Then its top `finetune.unfreeze_layers` layers (0: all) train too,
at `finetune.backbone_lr_scale` x the schedule's rate; BatchNormalization layers stay frozen (their statistics
came from the pretraining data). One optimizer serves both phases: it is built over every weight that will
train, so its step count, its learning-rate schedule and its checkpointed state run on across the phase change
and across a resume in either phase.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.compat import keras_lr_scale
from nntrain.logs import log
from nntrain.models import heads
from nntrain.models.backbone import NAME as BACKBONE


def active(config: ml_collections.ConfigDict) -> bool:
    """Whether the run fine-tunes in phases (or only the top of its backbone)."""
    return bool(config.finetune.freeze_epochs or config.finetune.unfreeze_layers)


def backbone_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The backbone's layers, bottom to top: the nested `backbone` model's, else every layer but the head (inside
    the one model an experiment's get_model nests under nntrain's input)."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if any(layer.name == BACKBONE for layer in layers):
        return list(model.get_layer(BACKBONE).layers)
    if len(layers) == 1 and isinstance(layers[0], keras.Model):
        return backbone_layers(layers[0])
    return [layer for layer in layers if layer.name != heads.NAME]


def _tuned(config: ml_collections.ConfigDict, layers: list[keras.layers.Layer]) -> list[keras.layers.Layer]:
    """The backbone layers that train after the frozen phase: the top unfreeze_layers (0: all), without
    BatchNormalization."""
    top = layers[-config.finetune.unfreeze_layers:] if config.finetune.unfreeze_layers else layers
    return [layer for layer in top if not isinstance(layer, keras.layers.BatchNormalization)]


def setup(model: keras.Model, config: ml_collections.ConfigDict) -> None:
    """After compile, under the strategy's scope: builds the optimizer over every weight that will ever train,
    scales the backbone's learning rate, and freezes the backbone for the first phase (epoch 0)."""
    scale = config.finetune.backbone_lr_scale
    if not active(config) and scale == 1.0:
        return
    layers = backbone_layers(model)
    if active(config):
        unfreeze(model, config)  # as in the second phase: the optimizer gets a slot for every weight that trains
    model.optimizer.build(model.trainable_variables)
    if scale != 1.0:
        keras_lr_scale.scale_learning_rate(model.optimizer, [v for layer in layers for v in layer.trainable_variables],
                                           scale)
    if config.finetune.freeze_epochs:
        _set_trainable(layers, [])


def _set_trainable(layers: list[keras.layers.Layer], tuned: list[keras.layers.Layer]) -> None:
    """Makes exactly `tuned` of the backbone's `layers` trainable (the rest of the model stays trainable)."""
    chosen = {id(layer) for layer in tuned}
    for layer in layers:
        layer.trainable = id(layer) in chosen


class Unfreeze(keras.callbacks.Callback):
    """At the start of epoch `freeze_epochs` (also of a resumed run past it) unfreezes the backbone's top layers
    and retraces the train step, as Keras asks after changing `trainable` (`make_train_function(force=True)`).

    Put it after the EMA weight swap, which swaps back the variables that trained in the epoch before."""

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__()
        self.config = config
        self.frozen = bool(config.finetune.freeze_epochs)

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        if not self.frozen or epoch < self.config.finetune.freeze_epochs:
            return
        tuned, layers = unfreeze(self.model, self.config)
        self.model.make_train_function(force=True)
        self.frozen = False
        log(f"epoch {epoch + 1}: fine-tuning {tuned} of the backbone's {layers} layers (BatchNormalization frozen) "
            f"at {self.config.finetune.backbone_lr_scale:g} x the learning rate")


def unfreeze(model: keras.Model, config: ml_collections.ConfigDict) -> tuple[int, int]:
    """Makes the backbone's layers of the second phase trainable (as they are after the frozen epochs); returns
    how many of its layers train, and of how many. Retrace the train step after it."""
    layers = backbone_layers(model)
    tuned = _tuned(config, layers)
    _set_trainable(layers, tuned)
    return len(tuned), len(layers)


def callbacks(config: ml_collections.ConfigDict) -> list[keras.callbacks.Callback]:
    """The phase change, when the run starts frozen."""
    return [Unfreeze(config)] if config.finetune.freeze_epochs else []
