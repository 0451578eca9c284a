"""keras-tuner tuners by name, each logging one line per finished trial: number, settings, score, best so far."""

from __future__ import annotations

import json
import os

import keras_tuner
import tensorflow as tf

from nntrain import registry
from nntrain.config import monitor_mode
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.tuning import results
from nntrain.tuning.hypermodel import HyperModel

PROJECT = "search"  # keras-tuner's project folder inside model_dir
MAX_CONSECUTIVE_FAILED_TRIALS = 5
HYPERBAND_FACTOR = 3


class _Progress:
    """Mixed into a keras-tuner Tuner: logs each trial as it starts and once the oracle has scored it."""

    finished: list[str]  # ids of the trials this tuner ran

    def on_trial_begin(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_begin(trial)
        row = results.row(trial, self.hypermodel)
        log(f"trial {results.number(self.oracle, trial)} started: {results.describe(row)}")

    def on_trial_end(self, trial: keras_tuner.engine.trial.Trial) -> None:
        super().on_trial_end(trial)
        self.finished.append(trial.trial_id)
        log(results.progress_line(self.oracle, self.oracle.get_trial(trial.trial_id), self.hypermodel))


class Hyperband(keras_tuner.Hyperband):
    """keras-tuner's Hyperband with the others' arguments: it budgets epochs up to the experiment's train.epochs,
    and `max_trials` still caps the number of trials."""

    def __init__(self, hypermodel: HyperModel, max_trials: int, **options):
        super().__init__(hypermodel=hypermodel, max_epochs=hypermodel.config.train.epochs, factor=HYPERBAND_FACTOR,
                         **options)
        self.oracle.max_trials = max_trials


def objective(name: str, hypermodel: HyperModel) -> keras_tuner.Objective:
    """The objective `name` with its direction; it must be a metric that the experiment's training reports."""
    config = hypermodel.config
    names = ["loss", *config.train.metrics]
    if config.data.eval_split:
        names += [f"val_{n}" for n in names]
    if name not in names:
        raise NntrainError(f"--objective={name} is not a metric of this experiment: use one of {', '.join(names)}")
    mode = config.train.monitor_mode if name == config.train.monitor else "auto"
    return keras_tuner.Objective(name, monitor_mode(name, mode))


def check(name: str, max_trials: int, executions_per_trial: int) -> None:
    """Raises NntrainError for an unknown tuner (registry.TUNERS) or a budget below one."""
    registry.TUNERS.get(name)
    if max_trials < 1 or executions_per_trial < 1:
        raise NntrainError(f"--max_trials={max_trials} and --executions_per_trial={executions_per_trial} must be >= 1")


def create(name: str, hypermodel: HyperModel, goal: keras_tuner.Objective, max_trials: int,
           executions_per_trial: int, model_dir: str, strategy: tf.distribute.Strategy) -> keras_tuner.Tuner:
    """The tuner registered as `name` (see `check`) over `hypermodel`, reloading the search in model_dir/search if
    there is one."""
    base = registry.TUNERS.get(name)
    tuner_class = type(f"Nntrain{base.__name__}", (_Progress, base), {})
    common = {
        "hypermodel": hypermodel, "objective": goal,
        "seed": hypermodel.config.seed + 1,  # keras-tuner takes seed 0 for "no seed"
        "executions_per_trial": executions_per_trial, "directory": model_dir, "project_name": PROJECT,
        "overwrite": False, "distribution_strategy": strategy,
        "max_consecutive_failed_trials": MAX_CONSECUTIVE_FAILED_TRIALS,
    }
    try:
        tuner = tuner_class(max_trials=max_trials, **common)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:  # keras-tuner's state files, read on reload
        raise NntrainError(f"the search state in {os.path.join(model_dir, PROJECT)} is damaged (a JSON file: {e}): "
                           "restore it, or start a new search in another --model_dir") from e
    tuner.finished = []
    return tuner
