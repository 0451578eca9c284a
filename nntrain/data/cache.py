"""data.cache: which splits are kept in memory after their first pass (auto | true | false)."""

from __future__ import annotations

import ml_collections
import tensorflow as tf

from nntrain.data.splits import Split
from nntrain.logs import log

POLICIES = ("auto", "true", "false")
MB = 2 ** 20


def decoded_bytes(split: Split) -> int | None:
    """The split's size in memory as tf.data would cache it; None when unknown (uncounted, or not fixed-size)."""
    if split.num_examples is None:
        return None
    per_example = 0
    for spec in tf.nest.flatten(split.dataset.element_spec):
        if not spec.shape.is_fully_defined() or spec.dtype == tf.string:
            return None
        per_example += spec.shape.num_elements() * spec.dtype.size
    return per_example * split.num_examples


def plan(data_config: ml_collections.ConfigDict, splits: dict[str, Split | None]) -> dict[str, bool]:
    """Which of the run's splits (role -> split) to cache, with one log line each.

    auto caches splits in the order given while their decoded sizes are known and add up to at most
    data.cache_budget_mb, never a synthetic or uncounted (streaming) one; true caches every split but synthetic
    ones; false none.
    """
    policy, budget = data_config.cache, data_config.cache_budget_mb * MB
    decisions = {}
    for role, split in splits.items():
        if split is None:
            decisions[role] = False
            continue
        size = decoded_bytes(split)
        shown = f"{size / MB:.1f} MB decoded" if size is not None else "size unknown"
        if policy == "false" or not split.cacheable:
            why = "data.cache=false" if policy == "false" else "generated on the fly"
            cached, note = False, f"{shown}; {why}"
        elif policy == "true":
            cached, note = True, f"{shown}; data.cache=true"
        elif size is None:
            cached, note = False, f"{shown}, streamed from its files; data.cache=auto"
        else:
            cached = size <= budget
            budget -= size if cached else 0
            note = f"{shown}, {'within' if cached else 'over'} data.cache_budget_mb=" \
                   f"{data_config.cache_budget_mb}; data.cache=auto"
        log(f"{role} split {'cached in memory after its first pass' if cached else 'not cached'} ({note})")
        decisions[role] = cached
    return decisions
