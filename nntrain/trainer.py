"""`train(config, model_dir)`: build data and model under a strategy, fit with safe callbacks, save.

model_dir layout:
  config.json        the resolved config (reproduce or resume the run)
  metrics.jsonl      one line per epoch
  checkpoints/       epoch-N.keras (the last finished epoch, with optimizer state: resume), best.keras,
                     state.json (which epoch, best value)
  logs/              TensorBoard
  model.keras        the final model
  workers/N/         multi-worker only: worker N's own checkpoints/ (the chief, worker 0, writes all of the above)
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time

import keras
import ml_collections
import tensorflow as tf

from nntrain import callbacks as nn_callbacks
from nntrain import cluster, distribute, execution, guards, models, optim
from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain.errors import NntrainError
from nntrain.logs import log

FINAL_MODEL = "model.keras"
CHECKPOINTS = "checkpoints"
METRICS_FILE = "metrics.jsonl"


class TrainingDiverged(NntrainError):
    """The loss became NaN or infinite."""


@dataclasses.dataclass
class Prepared:
    """Everything a run needs before it writes anything: data, compiled model, execution settings."""

    data: nn_data.Datasets
    model: keras.Model
    execution: execution.Execution
    steps_per_epoch: int
    strategy: tf.distribute.Strategy


def prepare(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy) -> Prepared:
    """Builds the datasets and the compiled model under `strategy`; shared by train, tune and bench."""
    data = nn_data.build(config.data, config.train.batch_size, strategy, seed=config.seed)
    steps_per_epoch = config.train.steps_per_epoch or data.steps_per_epoch
    model, run = build_model(config, data.spec, steps_per_epoch, strategy)
    return Prepared(data, model, run, steps_per_epoch, strategy)


def build_model(config: ml_collections.ConfigDict, spec: nn_data.DatasetSpec, steps_per_epoch: int,
                strategy: tf.distribute.Strategy) -> tuple[keras.Model, execution.Execution]:
    """The model of `config`, seeded and compiled for `steps_per_epoch` steps per epoch under `strategy`.

    `prepare` and the tuner's HyperModel both build models here, so a trial trains exactly like `train`.
    """
    run = execution.resolve(config.train, strategy, steps_per_epoch)
    execution.apply_precision(run.precision)
    keras.utils.set_random_seed(config.seed)
    total_steps = steps_per_epoch * config.train.epochs
    with strategy.scope():
        model = models.build(config.model, spec)
        model.compile(optimizer=optim.optimizer(config, total_steps), loss=optim.loss(config),
                      metrics=list(config.train.metrics), steps_per_execution=run.steps_per_execution,
                      jit_compile=run.jit_compile)
    return model, run


def train(config: ml_collections.ConfigDict, model_dir: str,
          strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto") -> dict:
    """Trains `config` into `model_dir`, resuming from its last checkpoint if there is one; returns final metrics."""
    start = time.time()
    nn_config.validate(config)
    _check_writable(model_dir)
    _check_same_model(config, model_dir)
    strategy = strategy or distribute.create_strategy("auto")
    prepared = prepare(config, strategy)
    model, data, steps_per_epoch = prepared.model, prepared.data, prepared.steps_per_epoch
    guards.check_run(config, model_dir, prepared)
    _log_plan(config, prepared)

    # Multi-worker: the chief writes model_dir; worker N only its backups, in model_dir/workers/N (cluster.py).
    chief, out_dir = cluster.is_chief(strategy), cluster.output_dir(model_dir, strategy)
    os.makedirs(out_dir, exist_ok=True)
    if chief:
        nn_config.save(config, model_dir)
    checkpoint_dir = os.path.join(model_dir, CHECKPOINTS)  # every worker resumes from the chief's
    with strategy.scope():
        initial_epoch = nn_callbacks.restore(model, checkpoint_dir)
    if initial_epoch:
        log(f"resuming from the checkpoint in {checkpoint_dir}: {initial_epoch} of {config.train.epochs} "
            "epochs done")
    nan_guard = nn_callbacks.StopOnNaN(steps_per_epoch)
    checkpoints = nn_callbacks.Checkpoints(os.path.join(out_dir, CHECKPOINTS), config.train.monitor, keep_best=chief)
    # The checkpoint is an epoch's commit point, so it comes after the metrics line that describes the epoch.
    callbacks = [nan_guard]
    if chief:
        callbacks.append(nn_callbacks.MetricsFile(os.path.join(model_dir, METRICS_FILE), initial_epoch))
    callbacks.append(checkpoints)
    if config.train.tensorboard and chief:
        callbacks.append(keras.callbacks.TensorBoard(os.path.join(model_dir, "logs")))
    if config.train.early_stopping_patience:
        callbacks.append(keras.callbacks.EarlyStopping(config.train.monitor,
                                                       patience=config.train.early_stopping_patience))
    with cluster.peer_failures(strategy):
        history = model.fit(data.train, epochs=config.train.epochs, initial_epoch=initial_epoch,
                            steps_per_epoch=steps_per_epoch, validation_data=data.eval,
                            validation_steps=config.train.eval_steps, callbacks=callbacks,
                            verbose=_progress(verbose), shuffle=False)
    if nan_guard.nan_step is not None:
        latest = nn_callbacks.latest_checkpoint(checkpoint_dir)
        kept = f"{latest[0]} (epoch {latest[1]})" if latest else "none (no epoch finished)"
        raise TrainingDiverged(
            f"loss became NaN/inf at step {nan_guard.nan_step}; last finite loss "
            f"{nan_guard.last_finite_loss}; checkpoint kept: {kept}; lower optimizer.learning_rate "
            "or set optimizer.global_clip_norm")
    if not chief:
        metrics = cluster.last_logs(history)
        log(f"worker done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; the chief saves the model")
        return metrics
    final_path = os.path.join(model_dir, FINAL_MODEL)
    nn_callbacks.save_atomic(model, final_path)
    metrics = last_metrics(model_dir)
    log(f"done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; model saved to {final_path}")
    return metrics


def _progress(verbose: int | str) -> int | str:
    """"auto": a live progress bar on a terminal, one line per epoch in logs and CI (no bar redraws)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def last_metrics(model_dir: str) -> dict:
    """The last line of the run's metrics file, as a dict ({} before the first epoch)."""
    path = os.path.join(model_dir, METRICS_FILE)
    if not os.path.isfile(path):
        return {}
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    return json.loads(lines[-1]) if lines else {}


def _format_metrics(metrics: dict) -> str:
    shown = {k: v for k, v in metrics.items() if k not in ("learning_rate", "seconds", "wall_time")}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def _check_writable(model_dir: str) -> None:
    """Fails before anything is written if model_dir cannot be created or written."""
    if not model_dir:
        raise NntrainError("no model_dir given: pass --model_dir=DIR (it is created if missing)")
    existing = os.path.abspath(model_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NntrainError(f"model_dir '{model_dir}' cannot be created: '{existing}' is a file; choose another path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise NntrainError(f"model_dir '{model_dir}' is not writable ('{existing}' denies writing); "
                           "choose a directory you can write to")


def _check_same_model(config: ml_collections.ConfigDict, model_dir: str) -> None:
    """A model_dir holds one model: resuming with another architecture would corrupt it."""
    path = os.path.join(model_dir, nn_config.RESOLVED_CONFIG_NAME)
    if not os.path.isfile(path):
        return
    with open(path) as f:
        saved = json.load(f)
    current = nn_config.to_dict(config)
    if saved.get("model") != current["model"]:
        raise NntrainError(f"model_dir '{model_dir}' holds a run of another model ({saved.get('model')}); "
                           "use a new --model_dir, or the same model config to resume")
    changed = sorted(f"{section}.{key}" for section in current if isinstance(current[section], dict)
                     for key in current[section]
                     if saved.get(section, {}).get(key) != current[section][key])
    if changed:
        log(f"resuming with a changed config: {', '.join(changed)}")


def _log_plan(config: ml_collections.ConfigDict, prepared: Prepared) -> None:
    data, run = prepared.data, prepared.execution
    log(f"experiment {config.get('experiment', '?')}: {config.data.source} -> {config.model.name} "
        f"({prepared.model.count_params():,} parameters)")
    log(f"strategy: {distribute.describe(prepared.strategy)}")
    log(f"global batch {data.global_batch_size} = {data.per_replica_batch_size} per replica x "
        f"{data.num_replicas} replica(s); {prepared.steps_per_epoch} steps/epoch; {data.spec.train_examples} train / "
        f"{data.spec.eval_examples} eval examples")
    log(f"precision {run.precision}, steps_per_execution {run.steps_per_execution}, "
        f"jit_compile {run.jit_compile}")
