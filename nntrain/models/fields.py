"""Reading model config fields: a missing or bad value raises NntrainError naming its key."""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError

ACTIVATIONS = ("relu", "tanh", "sigmoid", "gelu")


def bad(key: str, value: Any, allowed: str) -> NntrainError:
    """The error for `config.model.<key>` holding a value that is not allowed."""
    return NntrainError(f"config.model.{key}={value!r} is not allowed: {allowed}")


def get(model_config: ml_collections.ConfigDict, key: str) -> Any:
    """The field's value; a missing field is an error that says where to set it."""
    if key not in model_config:
        raise NntrainError(f"config.model.{key} is missing: model '{model_config.get('name')}' needs it; "
                           f"set config.model.{key} in the experiment's get_config()")
    return model_config[key]


def _checked(model_config: ml_collections.ConfigDict, key: str, ok: Callable[[Any], bool], allowed: str) -> Any:
    value = get(model_config, key)
    if not ok(value):
        raise bad(key, value, allowed)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def positive_int(model_config: ml_collections.ConfigDict, key: str) -> int:
    """An integer > 0."""
    return int(_checked(model_config, key, lambda v: _is_int(v) and v > 0, "it must be an integer > 0"))


def positive_ints(model_config: ml_collections.ConfigDict, key: str) -> tuple[int, ...]:
    """A non-empty tuple of integers > 0, e.g. hidden layer sizes."""
    value = _checked(model_config, key,
                     lambda v: isinstance(v, (tuple, list)) and len(v) > 0 and all(_is_int(i) and i > 0 for i in v),
                     "it must be a non-empty list of integers > 0, such as 64,32")
    return tuple(int(i) for i in value)


def non_negative(model_config: ml_collections.ConfigDict, key: str) -> float:
    """A number >= 0, e.g. a regularization factor."""
    return float(_checked(model_config, key, lambda v: _is_number(v) and v >= 0, "it must be a number >= 0"))


def rate(model_config: ml_collections.ConfigDict, key: str) -> float:
    """A fraction in [0, 1), e.g. a dropout rate."""
    return float(_checked(model_config, key, lambda v: _is_number(v) and 0 <= v < 1, "it must be in [0, 1)"))


def flag(model_config: ml_collections.ConfigDict, key: str) -> bool:
    """A bool."""
    return _checked(model_config, key, lambda v: isinstance(v, bool), "it must be true or false")


def choice(model_config: ml_collections.ConfigDict, key: str, options: Iterable[str]) -> str:
    """One of `options`."""
    options = tuple(options)
    return _checked(model_config, key, lambda v: v in options, f"use one of {', '.join(options)}")


def activation(model_config: ml_collections.ConfigDict) -> str:
    """`model.activation`, one of ACTIVATIONS."""
    return choice(model_config, "activation", ACTIVATIONS)


def embed_dim_and_heads(model_config: ml_collections.ConfigDict) -> tuple[int, int]:
    """`model.embed_dim` and `model.num_heads`, the first divisible by the second (attention models)."""
    embed_dim = positive_int(model_config, "embed_dim")
    num_heads = positive_int(model_config, "num_heads")
    if embed_dim % num_heads:
        raise bad("embed_dim", embed_dim, f"it must be divisible by config.model.num_heads={num_heads}, "
                                          f"e.g. {-(-embed_dim // num_heads) * num_heads}")
    return embed_dim, num_heads


def require_input(spec: DatasetSpec, model: str, what: str, *, rank: int | None = None,
                  token_ids: bool = False) -> None:
    """Checks that the data's examples suit `model`: `what` describes what it needs."""
    ok = ((rank is None or len(spec.input_shape) == rank)
          and spec.input_dtype.startswith("int") == token_ids
          and (not token_ids or bool(spec.vocab_size)))
    if not ok:
        vocab = f" and vocab_size={spec.vocab_size}" if token_ids else ""
        raise NntrainError(f"model '{model}' needs {what}, but the data gives {spec.input_dtype} examples of shape "
                           f"{tuple(spec.input_shape)}{vocab}: choose another config.model.name or config.data.source")
