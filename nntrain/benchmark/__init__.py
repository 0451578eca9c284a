"""`nntrain bench`: steady-state throughput, input-pipeline headroom, FLOPs, MFU and memory of an experiment.

    run(config, strategy, steps=DEFAULT_STEPS) -> dict     # one flat, JSON-ready result
    format_table(result) -> str                            # the same result for people

It may import every layer below it (the foundation through `run`, `exports` and `tuning`); never `api` or `cli`.
"""

from nntrain.benchmark.report import format_table
from nntrain.benchmark.runner import DEFAULT_STEPS, run

__all__ = ["DEFAULT_STEPS", "format_table", "run"]
