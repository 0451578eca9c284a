"""The learning rate searched is a base rate at the experiment's batch size, scaled to each trial's batch size.

linear (Goyal et al. 2017, SGD): lr * b / b0; sqrt (Malladi et al. 2022, Adam-family): lr * sqrt(b / b0);
none: lr. `auto` is linear for SGD and sqrt for every adaptive optimizer.
"""

from __future__ import annotations

import math

from nntrain.errors import NntrainError

RULES = ("auto", "linear", "sqrt", "none")


def rule_for(rule: str, optimizer: str) -> str:
    """The rule `auto` stands for with `optimizer`, or `rule` itself."""
    if rule not in RULES:
        raise NntrainError(f"--lr_scaling={rule!r} is not allowed: use one of {', '.join(RULES)}")
    if rule == "auto":
        return "linear" if optimizer == "sgd" else "sqrt"
    return rule


def scaled(base: float, batch_size: int, reference_batch_size: int, rule: str) -> float:
    """`base` (right at `reference_batch_size`) scaled to `batch_size` by `rule` (linear, sqrt or none)."""
    ratio = batch_size / reference_batch_size
    return base * {"linear": ratio, "sqrt": math.sqrt(ratio), "none": 1.0}[rule]
