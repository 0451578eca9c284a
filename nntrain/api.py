"""The library entry points that notebooks and the CLI share (TensorFlow is imported on first call)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

import ml_collections

from nntrain import config as nn_config
from nntrain.runtime import Runtime

if TYPE_CHECKING:  # it imports TensorFlow, which `import nntrain` must not
    from nntrain.results import Predictions


def load_config(experiment: str, overrides: Iterable[tuple[str, str]] | dict = ()) -> ml_collections.ConfigDict:
    """An experiment's config (name or path) with overrides such as {"train.batch_size": "256"} applied."""
    items = overrides.items() if isinstance(overrides, dict) else overrides
    return nn_config.resolve(experiment, [(key, str(value)) for key, value in items])


def train(config: ml_collections.ConfigDict | str, model_dir: str, strategy: str = "auto", tpu: str = "",
          verbose: int | str = "auto") -> dict:
    """Trains an experiment (a config, or an experiment name/path) into model_dir; returns final metrics.

    Running it again with the same model_dir resumes from the last finished epoch.
    """
    from nntrain import distribute, trainer

    if isinstance(config, str):
        config = load_config(config)
    nn_config.validate(config)
    return trainer.train(config, model_dir, distribute.create_strategy(strategy, tpu), verbose=verbose)


def evaluate(model_dir: str, checkpoint: str = "final") -> dict:
    """Metrics of a trained model (final, best or latest checkpoint) on its eval split."""
    from nntrain import artifacts

    return artifacts.evaluate(model_dir, checkpoint)


def export(model_dir: str, export_dir: str, checkpoint: str = "final") -> dict:
    """Exports a trained model as `.keras` and a SavedModel into export_dir."""
    from nntrain import artifacts

    return artifacts.export(model_dir, export_dir, checkpoint)


def predict(model_dir: str, split: str | None = None, limit: int = 16, checkpoint: str = "final") -> Predictions:
    """A trained model's answers (features, labels, outputs, predicted) on the first `limit` examples of a
    split (default: its eval split)."""
    from nntrain import results

    return results.predict(model_dir, split, limit, checkpoint)


def history(model_dir: str) -> list[dict]:
    """A run's metrics, one dict per finished epoch."""
    from nntrain import results

    return results.history(model_dir)


def detect_runtime() -> Runtime:
    """Where this runs (Colab or not; TPU, GPU or CPU), the strategy to train with there, and advice."""
    from nntrain import runtime

    return runtime.detect()


def doctor(model_dir: str | None = None) -> list[dict]:
    """Checks of this machine's stack and devices, each with a fix where one is needed."""
    from nntrain import diagnostics

    return diagnostics.run_checks(model_dir)


def bench(config: ml_collections.ConfigDict | str, strategy: str = "auto", tpu: str = "", steps: int = 100) -> dict:
    """Steady-state throughput, input-pipeline headroom, FLOPs per example, MFU and peak memory of an experiment.

    Uses the data pipeline and compiled model `train` would; writes nothing. See docs/benchmarks.md.
    """
    from nntrain import benchmark, distribute

    if isinstance(config, str):
        config = load_config(config)
    return benchmark.run(config, distribute.create_strategy(strategy, tpu), steps)


def preflight(config: ml_collections.ConfigDict | str, target: str = "tpu", tpu_cores: int = 8, gpus: int = 1,
              tpu: str = "", model_dir: str | None = None) -> dict:
    """Checks on CPU that an experiment will run on `target` (tpu | gpu): a checklist with a fix for each problem.

    Compiles the real train step with XLA; checks static shapes, model ops, the batch for the replica count,
    paths a TPU host can reach, and estimates memory per replica. `report["ok"]` is False if a check failed.
    """
    from nntrain import preflight_checks as checklist

    if isinstance(config, str):
        config = load_config(config)
    return checklist.run(config, target, tpu_cores=tpu_cores, gpus=gpus, tpu=tpu, model_dir=model_dir)
