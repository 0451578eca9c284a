"""The library entry points that notebooks and the CLI share (TensorFlow is imported on first call)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, TypeVar

import ml_collections
import numpy as np

from nntrain import config as nn_config
from nntrain import quiet
from nntrain.distribute.runtime import Runtime

if TYPE_CHECKING:  # they import TensorFlow, which `import nntrain` must not
    import keras

    from nntrain.exports.results import Predictions

Function = TypeVar("Function", bound=Callable)


def _library_call(function: Function) -> Function:
    """The one wrapper of every library call that builds or loads a model: TensorFlow is imported with its C++
    start-up records (oneDNN, cudart_stub, cuInit) hidden, as the CLI does, and the call's process-wide changes
    (Keras's dtype policy and seeds, TensorFlow's op determinism, global seed and grappler options, Python's and
    NumPy's RNGs) are undone when it returns or raises, so a notebook's next cell computes as it did before
    (nntrain/compat/process_state.py)."""
    @functools.wraps(function)
    def call(*args, **kwargs):
        quiet.import_tensorflow_quietly()
        from nntrain.compat import process_state

        with process_state.kept():
            return function(*args, **kwargs)
    return call  # type: ignore[return-value]


def load_config(experiment: str, overrides: Iterable[tuple[str, str]] | dict = ()) -> ml_collections.ConfigDict:
    """An experiment's config (name or path) with overrides such as {"train.batch_size": "256"} applied."""
    items = overrides.items() if isinstance(overrides, dict) else overrides
    return nn_config.resolve(experiment, [(key, str(value)) for key, value in items])


def _checked(config: ml_collections.ConfigDict | str) -> ml_collections.ConfigDict:
    """An experiment name or path resolved, or a config a caller built or edited validated: the only check of a
    config on its way to the run (nntrain.config.validate; the CLI's config passed it in `resolve`)."""
    if isinstance(config, str):
        return load_config(config)
    nn_config.validate(config)
    return config


@_library_call
def train(config: ml_collections.ConfigDict | str, model_dir: str, strategy: str = "auto", tpu: str = "",
          verbose: int | str = "auto", callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Trains an experiment (a config, or an experiment name/path) into model_dir; returns final metrics.

    `callbacks` run after nntrain's own (metrics file, checkpoints, TensorBoard), after those of the experiment
    file's `get_callbacks(config)`. Running it again with the same model_dir resumes
    exactly from the last checkpoint (step or epoch end).
    """
    config = _checked(config)
    from nntrain.distribute import strategies
    from nntrain.run import trainer

    return trainer.train(config, model_dir, strategies.create_strategy(strategy, tpu), verbose=verbose,
                         extra_callbacks=callbacks)


@_library_call
def evaluate(model_dir: str, checkpoint: str = "final") -> dict:
    """Metrics of a trained model (final, best or latest checkpoint) on its eval split."""
    from nntrain.exports import artifacts

    return artifacts.evaluate(model_dir, checkpoint)


@_library_call
def export(model_dir: str, export_dir: str, checkpoint: str = "final", export_format: str = "saved_model",
           quantize: str = "none") -> dict:
    """Exports a trained model into export_dir: `model.keras`, a serving SavedModel that takes raw inputs and,
    with export_format="tflite", `model.tflite` (quantize: none | dynamic | float16 | int8); scores each."""
    from nntrain.exports import artifacts

    with quiet.native_records_hidden():  # TFLite's converter and interpreter log in C++
        return artifacts.export(model_dir, export_dir, checkpoint, export_format, quantize)


@_library_call
def predict(model_dir: str, split: str | np.ndarray | None = None, limit: int = 16,
            checkpoint: str = "final") -> Predictions:
    """A trained model's answers (features, labels, outputs, predicted) on the first `limit` examples of a
    split (default: its eval split), or on an array of examples as the data source stores them (uint8 images of
    its shape, e.g. (n, 28, 28, 1); labels are then None)."""
    from nntrain.exports import results

    return results.predict(model_dir, split, limit, checkpoint)


@_library_call
def history(model_dir: str) -> list[dict]:
    """A run's metrics, one dict per finished epoch."""
    from nntrain.exports import results

    return results.history(model_dir)


@_library_call
def detect_runtime() -> Runtime:
    """Where this runs (Colab or not; TPU, GPU or CPU), the strategy to train with there, and advice."""
    from nntrain.distribute import runtime

    return runtime.detect()


@_library_call
def doctor(model_dir: str | None = None) -> list[dict]:
    """Checks of this machine's stack and devices, each with a fix where one is needed."""
    from nntrain.distribute import diagnostics

    return diagnostics.run_checks(model_dir)


@_library_call
def bench(config: ml_collections.ConfigDict | str, strategy: str = "auto", tpu: str = "", steps: int = 100) -> dict:
    """Steady-state throughput, input-pipeline headroom, FLOPs per example, MFU and peak memory of an experiment.

    Uses the data pipeline and compiled model `train` would; writes nothing. See docs/benchmarks.md.
    """
    config = _checked(config)
    from nntrain import benchmark
    from nntrain.distribute import strategies

    return benchmark.run(config, strategies.create_strategy(strategy, tpu), steps)


@_library_call
def preflight(config: ml_collections.ConfigDict | str, target: str = "tpu", tpu_cores: int = 8, gpus: int = 1,
              tpu: str = "", model_dir: str | None = None) -> dict:
    """Checks on CPU that an experiment will run on `target` (tpu | gpu): a checklist with a fix for each problem.

    Compiles the real train step with XLA; checks static shapes, model ops, the batch for the replica count,
    paths a TPU host can reach, and estimates memory per replica. `report["ok"]` is False if a check failed.
    """
    config = _checked(config)
    from nntrain.run import preflight as checklist

    return checklist.run(config, target, tpu_cores=tpu_cores, gpus=gpus, tpu=tpu, model_dir=model_dir)


@_library_call
def tune(experiment: ml_collections.ConfigDict | str, model_dir: str, overrides: Iterable[tuple[str, str]] | dict = (),
         search_space: dict | None = None, strategy: str = "auto", tpu: str = "", **options) -> dict:
    """Hyperparameter search (keras-tuner) over the experiment's search space; returns the leaderboard.

    `experiment` is a name or path (its get_search_space() is the space) or a config (then pass `search_space`,
    or the experiment it was loaded from must be in experiments/). `options`: tuner (random | bayesian |
    hyperband | grid), max_trials, objective, executions_per_trial, resume, lr_scaling (auto | linear | sqrt |
    none), role (chief | worker), oracle_address, worker_id, worker_timeout, verbose. Writes results.csv,
    results.json and best_config.py into model_dir. See docs/tuning.md.
    """
    config = load_config(experiment, overrides) if isinstance(experiment, str) else _checked(experiment)
    from nntrain.distribute import strategies
    from nntrain.tuning import search
    from nntrain.tuning import search_space as spaces

    if search_space is None:
        search_space = spaces.load(experiment if isinstance(experiment, str) else config.get("experiment", ""))
    return search.run(config, search_space, model_dir, strategies.create_strategy(strategy, tpu),
                      search.Options(**options))


@_library_call
def find_batch_size(config: ml_collections.ConfigDict | str, strategy: str = "auto", tpu: str = "",
                    max_batch_size: int | None = None, num_steps: int = 20) -> dict:
    """Training examples/s of doubling batch sizes and the largest that still speeds training (writes nothing)."""
    config = _checked(config)
    from nntrain.distribute import strategies
    from nntrain.tuning import find_batch_size as finder

    return finder.find_batch_size(config, strategies.create_strategy(strategy, tpu), max_batch_size=max_batch_size,
                                  num_steps=num_steps)


@_library_call
def find_lr(config: ml_collections.ConfigDict | str, output_dir: str, strategy: str = "auto", tpu: str = "",
            min_lr: float = 1e-6, max_lr: float = 10.0, num_steps: int = 100) -> dict:
    """Learning-rate range test: writes lr_range.csv and lr_range.png into output_dir, suggests a range."""
    config = _checked(config)
    from nntrain.distribute import strategies
    from nntrain.tuning import find_lr as finder

    return finder.find_lr(config, output_dir, strategies.create_strategy(strategy, tpu), min_lr, max_lr, num_steps)


@_library_call
def generate(model_dir: str, prompt: str = "", max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, checkpoint: str = "final", top_p: float = 1.0) -> dict:
    """Text sampled from a trained byte-level language model (a run or its export) after `prompt`:
    {prompt, completion, new_tokens}; the same seed gives the same text."""
    from nntrain.exports import generate as generation

    with quiet.native_records_hidden():  # oneDNN's record of its int64 fallback, on the first model call
        return generation.generate(model_dir, prompt, max_new_tokens, temperature, top_k, seed, checkpoint, top_p)
