"""The tables of names a user extends, the same ones nntrain's built-ins are in: model builders (`model.name`),
data source schemes (`data.source=SCHEME:ARG`), strategies (`--strategy`), tuners (`--tuner`) and an
experiment file's callbacks. Each package registers its own built-ins (`models`, `data/sources.py`,
`distribute`, `tuning`); the command line's help and flag checks read the tables. Imports no TensorFlow, so
registering is free: a built-in may be registered by its import path and is imported when first looked up.

    @nntrain.register_model("tiny_mlp")
    def tiny_mlp(inputs, model_config, spec):   # the same interface as the built-in builders
        x = keras.layers.Flatten()(inputs)
        return nntrain.models.heads.output(x, model_config, spec)

    @nntrain.register_source("csv")
    def csv_source(arg, data_config):           # {split: (features, labels)} arrays, or a data.sources.Source
        ...

    @nntrain.register_strategy("two_cpus")
    def two_cpus(tpu):                          # --strategy=two_cpus; `tpu` is the --tpu flag
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from typing import Any

import ml_collections

from nntrain.errors import NntrainError


class Registry:
    """A name -> function table; a name not in it is an error that names the nearest one."""

    def __init__(self, what: str, setting: str):
        self.what, self.setting = what, setting  # setting: where a user names an entry (config.model.name)
        self._entries: dict[str, Callable | str] = {}

    def register(self, name: str) -> Callable[[Callable], Callable]:
        """A decorator that registers a function under `name` (registering a name again replaces it)."""
        self._check_name(name)

        def add(function: Callable) -> Callable:
            self._entries[name] = function
            return function
        return add

    def add(self, name: str, target: str) -> None:
        """Registers what `target` ("package.module:attribute") names, imported when `name` is first looked up:
        so the command line lists a built-in without importing TensorFlow."""
        self._check_name(name)
        self._entries[name] = target

    def _check_name(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise NntrainError(f"a {self.what} needs a non-empty name, got {name!r}")

    def names(self) -> list[str]:
        return sorted(self._entries)

    def find(self, name: str) -> Callable | None:
        entry = self._entries.get(name)
        if isinstance(entry, str):
            module, _, attribute = entry.partition(":")
            entry = self._entries[name] = getattr(importlib.import_module(module), attribute)
        return entry

    def get(self, name: Any) -> Callable:
        """The function registered as `name`; NntrainError naming the nearest registered name otherwise."""
        function = self.find(name) if isinstance(name, str) else None
        if function is None:
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise NntrainError(f"unknown {self.what} {self.setting}={name!r}: {hint}available: "
                               f"{', '.join(self.names())} (or register one with nntrain.register_"
                               f"{self.what.split()[-1]})")
        return function


MODELS = Registry("model", "config.model.name")  # (inputs, model_config, spec) -> outputs
SOURCES = Registry("data source", "config.data.source")  # (arg, data_config) -> {split: (x, y)} | Source
STRATEGIES = Registry("strategy", "--strategy")  # (tpu) -> tf.distribute.Strategy
TUNERS = Registry("tuner", "--tuner")  # a keras_tuner.Tuner class: (hypermodel, max_trials=..., **options)
CALLBACKS = Registry("callbacks of experiment", "config.experiment")  # experiment name -> get_callbacks(config)
EXPERIMENT_MODEL = ".get_model"  # model.name of an experiment file's get_model(): `<experiment>.get_model`


def register_model(name: str) -> Callable[[Callable], Callable]:
    """Registers `builder(inputs, model_config, spec) -> outputs` as `config.model.name=name`."""
    return MODELS.register(name)


def register_source(scheme: str) -> Callable[[Callable], Callable]:
    """Registers `open(arg, data_config) -> {split: (features, labels)} | Source` for `data.source=SCHEME:ARG`."""
    return SOURCES.register(scheme)


def register_strategy(name: str) -> Callable[[Callable], Callable]:
    """Registers `build(tpu: str) -> tf.distribute.Strategy` as `--strategy=name` (`tpu`: the --tpu flag)."""
    return STRATEGIES.register(name)


def register_tuner(name: str) -> Callable[[type], type]:
    """Registers a keras_tuner.Tuner subclass as `--tuner=name`; nntrain constructs it with `hypermodel`,
    `objective`, `max_trials`, `seed`, `executions_per_trial`, `directory`, `project_name`, `overwrite`,
    `distribution_strategy` and `max_consecutive_failed_trials` (the arguments of keras-tuner's RandomSearch)."""
    return TUNERS.register(name)


def add_experiment_hooks(module: Any, config: ml_collections.ConfigDict) -> None:
    """An experiment file's own model (`get_model(config, spec) -> keras.Model`) becomes the registered model
    `<experiment>.get_model`, which config.model.name then names; its `get_callbacks(config)` are added to runs."""
    name = config.experiment
    if hasattr(module, "get_model"):
        config.model.name = f"{name}{EXPERIMENT_MODEL}"
        MODELS.register(config.model.name)(_builder_of(module.get_model, config))
    if hasattr(module, "get_callbacks"):
        CALLBACKS.register(name)(module.get_callbacks)


def _builder_of(get_model: Callable, experiment_config: ml_collections.ConfigDict) -> Callable:
    """A builder calling `get_model(config, spec)` with the model section it is given (the tuner fills one)."""
    def build(inputs, model_config: ml_collections.ConfigDict, spec):
        import keras

        config = experiment_config.copy_and_resolve_references()
        config.model = model_config
        where = experiment_model_call(experiment_config.experiment)
        model = _user_call(where, get_model, config, spec)
        if not isinstance(model, keras.Model):
            raise NntrainError(f"{where} returned {type(model).__name__}, not a keras.Model: return the model")
        return model(inputs)
    build.experiment = experiment_config.experiment  # models.build checks its output units against model.head
    return build


def experiment_model_call(experiment: str) -> str:
    """How errors name an experiment file's get_model call."""
    return f"experiment '{experiment}': get_model(config, spec)"


def experiment_callbacks(config: ml_collections.ConfigDict) -> list:
    """The callbacks the experiment file's `get_callbacks(config)` returns ([] if it has none)."""
    import keras

    get_callbacks = CALLBACKS.find(config.get("experiment", ""))
    if not get_callbacks:
        return []
    where = f"experiment '{config.experiment}': get_callbacks(config)"
    callbacks = _user_call(where, lambda: list(get_callbacks(config)))
    for callback in callbacks:
        if not isinstance(callback, keras.callbacks.Callback):
            raise NntrainError(f"{where} returned {callback!r}, not a keras.callbacks.Callback: return a list of them")
    return callbacks


def _user_call(where: str, function: Callable, *args: Any) -> Any:
    """Calls a function of an experiment file; an exception it raises becomes one NntrainError naming `where`."""
    try:
        return function(*args)
    except NntrainError:
        raise
    except Exception as e:  # a broken experiment file is the user's to fix
        raise NntrainError(f"{where} failed: {type(e).__name__}: {e}") from e
