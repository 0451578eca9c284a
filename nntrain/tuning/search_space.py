"""Search spaces: what `nntrain tune` varies, declared by an experiment's `get_search_space()`.

    from nntrain.tuning.search_space import choice, layers, log_range

    def get_search_space():
        return {
            "train.batch_size": choice(32, 64, 128, 256),
            "optimizer.learning_rate": log_range(1e-4, 1e-2),  # base rate at the experiment's batch size
            "model.hidden_sizes": layers(depth=(1, 2), width=(128, 256), factor=0.5),
        }

Keys are config fields, as in `--config.KEY=VALUE`; a trial's values are applied like such overrides. The
experiment's own value of a field is the default of its hyperparameter (a grid search starts there).
This module imports neither TensorFlow nor keras-tuner: experiment files import it.
"""

from __future__ import annotations

import dataclasses
import decimal
import functools
import itertools
from typing import Any, Protocol

import ml_collections

from nntrain import config as nn_config
from nntrain.errors import NntrainError
from nntrain.tuning import scaling

_SCALARS = (bool, int, float, str)
LEARNING_RATE = "optimizer.learning_rate"  # in a search space: the base rate, at the experiment's batch size
BASE_LEARNING_RATE = "base_learning_rate"


class Spec(Protocol):
    """One entry of a search space: the hyperparameters it declares and the config value they make."""

    def declare(self, hp: Any, key: str, current: Any) -> None:
        """Registers the hyperparameters of `key` with keras-tuner's `hp`, defaulting to `current`."""

    def setting(self, values: dict, key: str) -> Any:
        """The config value of `key` from a trial's hyperparameter values."""

    def candidates(self) -> list:
        """Config values to check before a search (all of them, or the ends of a range)."""


@dataclasses.dataclass(frozen=True)
class Choice:
    """One of `values` (numbers, strings or bools, all of one type)."""

    values: tuple

    def declare(self, hp: Any, key: str, current: Any) -> None:
        hp.Choice(key, list(self.values), default=current if current in self.values else None)

    def setting(self, values: dict, key: str) -> Any:
        return values[key]

    def candidates(self) -> list:
        return list(self.values)


@dataclasses.dataclass(frozen=True)
class Range:
    """A number in [low, high], sampled uniformly or on a log scale; integers if `integer`."""

    low: float
    high: float
    log: bool = False
    step: float | None = None
    integer: bool = False

    def declare(self, hp: Any, key: str, current: Any) -> None:
        inside = isinstance(current, (int, float)) and not isinstance(current, bool) and \
            self.low <= current <= self.high
        default = current if inside else None
        sampling = "log" if self.log else "linear"
        if self.integer:
            hp.Int(key, int(self.low), int(self.high), step=int(self.step or 1), sampling=sampling,
                   default=None if default is None else int(default))
        elif self.step:  # an ordered Choice of the grid, so trials, results and HParams hold 0.3 as declared
            grid = self.grid()
            hp.Choice(key, grid, default=float(default) if default in grid else None)
        else:
            hp.Float(key, float(self.low), float(self.high), sampling=sampling,
                     default=None if default is None else float(default))

    def grid(self) -> list[float]:
        """low, low + step, ... up to high in decimal arithmetic: (0.0, 0.3, step=0.1) -> [0.0, 0.1, 0.2, 0.3]
        (keras-tuner's stepped Float makes 0.30000000000000004, and drops high when (high - low) / step is a whole
        number that floats round below)."""
        low, high, step = (decimal.Decimal(repr(float(v))) for v in (self.low, self.high, self.step))
        return [float(low + k * step) for k in range(int((high - low) // step) + 1)]

    def setting(self, values: dict, key: str) -> Any:
        return values[key]

    def candidates(self) -> list:
        return [self.low, self.high]


@dataclasses.dataclass(frozen=True)
class Layers:
    """Layer sizes from two hyperparameters, `KEY.depth` and `KEY.width`: width * factor**i for each layer i."""

    depth: tuple[int, ...]
    width: tuple[int, ...]
    factor: float = 1.0

    def sizes(self, depth: int, width: int) -> tuple[int, ...]:
        return tuple(max(1, round(width * self.factor ** i)) for i in range(depth))

    def declare(self, hp: Any, key: str, current: Any) -> None:
        current = tuple(current) if isinstance(current, (tuple, list)) and current else ()
        hp.Choice(f"{key}.depth", list(self.depth),
                  default=len(current) if len(current) in self.depth else None)
        hp.Choice(f"{key}.width", list(self.width),
                  default=current[0] if current and current[0] in self.width else None)

    def setting(self, values: dict, key: str) -> tuple[int, ...]:
        return self.sizes(values[f"{key}.depth"], values[f"{key}.width"])

    def candidates(self) -> list:
        return [self.sizes(d, w) for d, w in itertools.product(self.depth, self.width)]


def choice(*values: Any) -> Choice:
    """One of `values`: choice(32, 64, 128), choice("adam", "sgd")."""
    kinds = {type(v) for v in values}
    if not values or len(kinds) != 1 or not kinds <= set(_SCALARS):
        raise NntrainError(f"choice{values!r}: give one or more values of one type (numbers, strings or bools)")
    return Choice(tuple(values))


def log_range(low: float, high: float) -> Range:
    """A number between low and high, log-uniform: log_range(1e-4, 1e-2) for a learning rate."""
    _check_range(low, high, "log_range")
    if low <= 0:
        raise NntrainError(f"log_range({low}, {high}): low must be > 0")
    return Range(low, high, log=True)


def float_range(low: float, high: float, step: float | None = None) -> Range:
    """A number between low and high, uniform, optionally on a grid of `step`: float_range(0.0, 0.5, step=0.1)."""
    _check_range(low, high, "float_range")
    if step is not None and not 0 < step <= high - low:
        raise NntrainError(f"float_range({low}, {high}, step={step}): step must be > 0 and at most high - low")
    return Range(low, high, step=step)


def int_range(low: int, high: int, step: int = 1) -> Range:
    """An integer between low and high (both included), every `step`."""
    _check_range(low, high, "int_range")
    return Range(low, high, step=step, integer=True)


def layers(depth: tuple[int, ...], width: tuple[int, ...], factor: float = 1.0) -> Layers:
    """Layer sizes from a depth and a first-layer width: layers((1, 2), (128, 256), factor=0.5) -> (256, 128)."""
    if not depth or not width or not all(isinstance(v, int) and v > 0 for v in (*depth, *width)) or factor <= 0:
        raise NntrainError(f"layers(depth={depth}, width={width}, factor={factor}): give positive integers for "
                           "depth and width and a factor > 0")
    return Layers(tuple(depth), tuple(width), factor)


def _check_range(low: float, high: float, name: str) -> None:
    if not low < high:
        raise NntrainError(f"{name}({low}, {high}): low must be below high")


@dataclasses.dataclass(frozen=True)
class Trial:
    """A trial's config and what it changed: settings by key, base and effective learning rate."""

    config: ml_collections.ConfigDict
    settings: dict[str, Any]
    base_learning_rate: float
    learning_rate: float  # scaled to the trial's batch size; what training uses
    lr_rule: str


def load(name_or_path: str) -> dict[str, Spec]:
    """The search space an experiment file declares with get_search_space()."""
    module, path = nn_config.experiment_module(name_or_path)
    if not hasattr(module, "get_search_space"):
        raise NntrainError(f"experiment '{path}' declares no search space: add get_search_space() to it "
                           "(see docs/tuning.md)")
    space = module.get_search_space()
    if not isinstance(space, dict) or not space:
        raise NntrainError(f"get_search_space() of '{path}' must return a non-empty dict of config keys to "
                           "choice(...), log_range(...), float_range(...), int_range(...) or layers(...)")
    return space


def validate(space: dict[str, Spec], config: ml_collections.ConfigDict) -> None:
    """Checks that every key is a config field and every candidate value fits it; raises NntrainError."""
    for key, spec in space.items():
        if not isinstance(spec, (Choice, Range, Layers)):
            raise NntrainError(f"search space entry '{key}': {spec!r} is not choice(...), log_range(...), "
                               "float_range(...), int_range(...) or layers(...)")
        for value in spec.candidates():
            nn_config.apply_overrides(config.copy_and_resolve_references(), [(key, _text(value))])


def hyperparameter_name(key: str) -> str:
    """keras-tuner's (and TensorBoard HParams') name of `key`: the searched learning rate is the base rate, so it
    is `base_learning_rate`; `optimizer.learning_rate` always means the rate a trial trains with (scaled)."""
    return BASE_LEARNING_RATE if key == LEARNING_RATE else key


def declare(space: dict[str, Spec], hp: Any, config: ml_collections.ConfigDict) -> None:
    """Registers every entry's hyperparameters with `hp`, defaulting to the config's values."""
    for key, spec in space.items():
        spec.declare(hp, hyperparameter_name(key),
                     functools.reduce(lambda node, part: node[part], key.split("."), config))


def apply(config: ml_collections.ConfigDict, space: dict[str, Spec], values: dict, lr_scaling: str) -> Trial:
    """The config of one trial: `values` applied like --config overrides, the learning rate scaled to its batch.

    Its settings hold the config values it trains with: `optimizer.learning_rate` is the scaled rate.
    """
    trial = config.copy_and_resolve_references()
    settings = {key: spec.setting(values, hyperparameter_name(key)) for key, spec in space.items()}
    nn_config.apply_overrides(trial, [(key, _text(value)) for key, value in settings.items()])
    rule = scaling.rule_for(lr_scaling, trial.optimizer.name)
    base = trial.optimizer.learning_rate
    trial.optimizer.learning_rate = scaling.scaled(base, trial.train.batch_size, config.train.batch_size, rule)
    nn_config.validate(trial)
    settings[LEARNING_RATE] = trial.optimizer.learning_rate
    return Trial(trial, settings, base, trial.optimizer.learning_rate, rule)


def _text(value: Any) -> str:
    """`value` as the text of a --config override."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    return repr(value) if isinstance(value, float) else str(value)
