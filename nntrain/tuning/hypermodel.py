"""The keras-tuner HyperModel of an experiment: the same builders, compile path and input pipeline as `train`.

build(hp): a copy of the config with the trial's values filled in (search_space.apply), compiled by
trainer.build_model. fit(hp, model, **kwargs): the input pipeline for the trial's batch size, then model.fit with
a run's callbacks (run.callbacks.callbacks_for: pruning, bits/byte, EMA, early stopping, the experiment's own) and
the tuner's kwargs passed through (Hyperband's epochs and initial_epoch, its callbacks after ours, verbose).
"""

from __future__ import annotations

import math
import time
from typing import Any

import keras
import keras_tuner
import ml_collections
import tensorflow as tf

from nntrain import data as nn_data
from nntrain.run import callbacks as nn_callbacks
from nntrain.run import trainer
from nntrain.tuning import search_space

# Extra metrics each trial reports beside Keras's: shown in the leaderboard, never the objective.
TRIAL_FACTS = ("epochs", "seconds", "steps_per_epoch")


class HyperModel(keras_tuner.HyperModel):
    """Builds and trains one trial of `config` with values from `space`."""

    def __init__(self, config: ml_collections.ConfigDict, space: dict[str, search_space.Spec],
                 strategy: tf.distribute.Strategy, lr_scaling: str, spec: nn_data.DatasetSpec):
        super().__init__(name=config.get("experiment", "experiment"))
        self.config = config
        self.space = space
        self.strategy = strategy
        self.lr_scaling = lr_scaling
        self.spec = spec

    def declare_hyperparameters(self, hp: keras_tuner.HyperParameters) -> None:
        search_space.declare(self.space, hp, self.config)

    def trial(self, values: dict) -> search_space.Trial:
        """The config and settings of the trial with hyperparameter `values`."""
        return search_space.apply(self.config, self.space, values, self.lr_scaling)

    def steps_per_epoch(self, config: ml_collections.ConfigDict) -> int:
        """Steps per epoch at the trial's batch size: one pass over the train split, as nntrain.data.build counts."""
        return config.train.steps_per_epoch or math.ceil(self.spec.train_examples / config.train.batch_size)

    def build(self, hp: keras_tuner.HyperParameters) -> keras.Model:
        self.declare_hyperparameters(hp)
        config = self.trial(hp.values).config
        model, _ = trainer.build_model(config, self.spec, self.steps_per_epoch(config), self.strategy)
        return model

    def fit(self, hp: keras_tuner.HyperParameters, model: keras.Model, **kwargs: Any) -> dict:
        """Trains on the trial's batch size (the data comes from the config, so search() takes none); returns the
        last epoch's metrics plus TRIAL_FACTS.

        A loss that turns NaN/inf stops the trial and marks it failed (keras-tuner's FailedTrialError).
        """
        config = self.trial(hp.values).config
        trainer.seed_everything(config)  # the trial's data stream and dropout start from the config's seed
        data = trainer.datasets(config, self.strategy, skip_batches=0)
        steps = self.steps_per_epoch(config)
        nan_guard = nn_callbacks.StopOnNaN(steps)
        # keras-tuner's own callbacks (the trial's best-epoch checkpoint in its trial directory, TensorBoard) last
        callbacks = [*nn_callbacks.callbacks_for(config, model, steps, nan_guard, checkpoints=None),
                     *kwargs.pop("callbacks", [])]
        kwargs.setdefault("epochs", config.train.epochs)
        start = time.time()
        history = model.fit(data.train, steps_per_epoch=steps, validation_data=data.eval,
                            validation_steps=config.train.eval_steps, callbacks=callbacks, shuffle=False, **kwargs)
        if nan_guard.nan_step is not None:
            raise keras_tuner.errors.FailedTrialError(nan_guard.describe())
        metrics = {name: float(values[-1]) for name, values in history.history.items()}
        epochs = history.epoch[-1] + 1 if history.epoch else 0
        return {**metrics, "epochs": epochs, "seconds": round(time.time() - start, 3), "steps_per_epoch": steps}
