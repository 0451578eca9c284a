"""`train(config, model_dir)`: build data and model under a strategy, fit with safe callbacks, save.

The run directory (its layout and every file in it) belongs to nntrain/rundir.py.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Sequence

import keras
import ml_collections
import tensorflow as tf

from nntrain import callbacks as nn_callbacks
from nntrain import cluster, distribute, execution, guards, models, optim, preemption, prune, rundir
from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain.bits_per_byte import callbacks as bits_per_byte_callbacks
from nntrain.errors import NntrainError
from nntrain.logs import log


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


def seed_everything(config: ml_collections.ConfigDict) -> None:
    """Seeds Python, NumPy, TensorFlow and Keras, and turns on op determinism if asked: before anything random
    (data pipeline included) is built, so that one config gives one result."""
    keras.utils.set_random_seed(config.seed)
    if config.train.deterministic:
        tf.config.experimental.enable_op_determinism()


def prepare(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, skip_batches: int = 0) -> Prepared:
    """Builds the datasets (the train stream after `skip_batches` batches) and the compiled model under
    `strategy`; shared by train, tune and bench."""
    seed_everything(config)
    data = datasets(config, strategy, skip_batches)
    steps_per_epoch = config.train.steps_per_epoch or data.steps_per_epoch
    model, run = build_model(config, data.spec, steps_per_epoch, strategy)
    return Prepared(data, model, run, steps_per_epoch, strategy)


def datasets(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
              skip_batches: int) -> nn_data.Datasets:
    """The datasets of a run (or a tuner's trial): the train stream sized for the run's epochs, exactly
    resumable, started after `skip_batches` batches."""
    return nn_data.build(config.data, config.train.batch_size, strategy, seed=config.seed, skip_batches=skip_batches,
                         epochs=config.train.epochs, steps_per_epoch=config.train.steps_per_epoch)


def build_model(config: ml_collections.ConfigDict, spec: nn_data.DatasetSpec, steps_per_epoch: int,
                strategy: tf.distribute.Strategy) -> tuple[keras.Model, execution.Execution]:
    """The model of `config`, seeded and compiled for `steps_per_epoch` steps per epoch under `strategy`.

    `prepare` and the tuner's HyperModel both build models here, so a trial trains exactly like `train`.
    """
    run = execution.resolve(config.train, strategy, steps_per_epoch)
    execution.apply_precision(run.precision)
    seed_everything(config)
    total_steps = steps_per_epoch * config.train.epochs
    with strategy.scope():
        model = models.build(config.model, spec)
        prune.attach(model, config.prune)
        model.compile(optimizer=optim.optimizer(config, total_steps), loss=optim.loss(config),
                      metrics=list(config.train.metrics), steps_per_execution=run.steps_per_execution,
                      jit_compile=run.jit_compile)
    return model, run


def train(config: ml_collections.ConfigDict, model_dir: str,
          strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto",
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Trains `config` into `model_dir`, resuming from its last checkpoint if there is one; returns final metrics.

    A resume is exact: the step, weights, optimizer and RNG states come from the checkpoint, and the data stream
    continues after the batches already consumed. SIGTERM/SIGINT save the current step and raise Preempted.
    """
    start = time.time()
    nn_config.validate(config)
    nn_callbacks.monitor_mode(config.train.monitor, config.train.monitor_mode)
    rundir.check(model_dir)
    _check_same_model(config, model_dir)
    _check_metrics_file(model_dir)
    strategy = strategy or distribute.create_strategy("auto")
    checkpoint_dir = rundir.checkpoint_dir(model_dir)  # every worker resumes from the chief's
    point = nn_callbacks.resume_point(checkpoint_dir)
    prepared = prepare(config, strategy, skip_batches=point.step if point else 0)
    model, steps_per_epoch = prepared.model, prepared.steps_per_epoch
    guards.check_run(config, prepared)  # model_dir: rundir.check above
    _check_same_data(prepared.data.spec, model_dir)
    with strategy.scope():
        step = nn_callbacks.restore(model, point)
    _log_plan(config, prepared)

    # Nothing was written so far. Multi-worker: the chief writes model_dir; worker N only its backups, in
    # model_dir/workers/N (cluster.py).
    chief, out_dir = cluster.is_chief(strategy), cluster.output_dir(model_dir, strategy)
    rundir.makedirs(out_dir)
    previous = _read_run_files(model_dir)
    if chief:
        nn_config.save(config, model_dir)
        nn_data.save_spec(prepared.data.spec, model_dir)
    initial_epoch, steps_into_epoch = divmod(step, steps_per_epoch)
    if step:
        log(f"resuming from the checkpoint in {checkpoint_dir}: step {step} of "
            f"{steps_per_epoch * config.train.epochs} ({initial_epoch} of {config.train.epochs} epochs done)")
    done = [r for r in rundir.read_jsonl(rundir.join(model_dir, rundir.METRICS)) if r["epoch"] <= initial_epoch]
    nan_guard = nn_callbacks.StopOnNaN(steps_per_epoch, done[-1].get("loss") if done else None)
    try:
        with preemption.watch() as signals, cluster.peer_failures(strategy):
            callbacks = _callbacks(config, model, model_dir, out_dir, chief, initial_epoch, step,
                                   steps_per_epoch, nan_guard, signals,
                                   point.state if point and out_dir == model_dir else None)
            fit = dict(validation_steps=config.train.eval_steps, callbacks=[*callbacks, *extra_callbacks],
                       verbose=_progress(verbose), shuffle=False)
            history = None
            if steps_into_epoch:  # finish the interrupted epoch on the rest of its stream
                history = model.fit(prepared.data.train, epochs=initial_epoch + 1, initial_epoch=initial_epoch,
                                    steps_per_epoch=steps_per_epoch - steps_into_epoch,
                                    validation_data=prepared.data.eval, **fit)
                initial_epoch += 1
            if initial_epoch < config.train.epochs and not (history and model.stop_training):
                data = prepared.data
                if steps_into_epoch:  # the stream of the next epochs, from the epoch's start
                    data = datasets(config, strategy, initial_epoch * steps_per_epoch)
                history = model.fit(data.train, epochs=config.train.epochs, initial_epoch=initial_epoch,
                                    steps_per_epoch=steps_per_epoch, validation_data=data.eval, **fit)
        if nan_guard.nan_step is not None:
            if chief:  # the settings that diverged are not the run's
                _undo_uncommitted(model_dir, previous, steps_per_epoch)
            latest = nn_callbacks.latest_checkpoint(checkpoint_dir)
            kept = f"{latest[0]} (step {latest[1]})" if latest else "none (nothing saved yet)"
            raise TrainingDiverged(f"{nan_guard.describe()}; checkpoint kept: {kept}; lower optimizer.learning_rate "
                                   "or set optimizer.global_clip_norm")
        if not chief:
            metrics = cluster.last_logs(history) if history else {}
            log(f"worker done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; the chief saves the model")
            return metrics
        final_path = rundir.join(model_dir, rundir.FINAL_MODEL)
        rundir.save_model(model, final_path)
    except guards.NonFiniteWeights:  # a finite loss with NaN weights (ReLU hides NaN inputs): stopped at a save
        if chief:
            _undo_uncommitted(model_dir, previous, steps_per_epoch)
        raise
    metrics = last_metrics(model_dir)
    log(f"done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; model saved to {final_path}")
    return metrics


def _callbacks(config: ml_collections.ConfigDict, model: keras.Model, model_dir: str, out_dir: str, chief: bool,
               initial_epoch: int, step: int, steps_per_epoch: int, nan_guard: nn_callbacks.StopOnNaN,
               signals: preemption.Watch, state: dict | None) -> list[keras.callbacks.Callback]:
    """The callbacks of a run, in order: EMA weights are swapped in first (so evaluation and saves see them);
    pruning and bits/byte add to the logs before the metrics line; the checkpoint is an epoch's commit point, so
    it comes after the metrics line that describes the epoch."""
    train = config.train
    callbacks: list[keras.callbacks.Callback] = [
        *optim.callbacks(config, resumed=step > 0),
        *prune.callbacks(model, config.prune, steps_per_epoch * train.epochs),
        nan_guard, *bits_per_byte_callbacks(config)]
    if chief:
        callbacks.append(nn_callbacks.MetricsFile(rundir.join(model_dir, rundir.METRICS), initial_epoch))
    callbacks.append(nn_callbacks.Checkpoints(
        rundir.checkpoint_dir(out_dir), train.monitor, train.monitor_mode, keep_best=chief,
        every_steps=train.checkpoint_every_steps, keep=train.keep_checkpoints, signals=signals, state=state))
    if train.tensorboard and chief:
        callbacks.append(keras.callbacks.TensorBoard(rundir.join(model_dir, rundir.LOGS)))
        log(f"TensorBoard logs: {rundir.join(model_dir, rundir.LOGS)} (tensorboard --logdir={model_dir})")
    if train.early_stopping_patience:
        callbacks.append(nn_callbacks.early_stopping(train.monitor, train.monitor_mode,
                                                     train.early_stopping_patience))
    return callbacks


def _progress(verbose: int | str) -> int | str:
    """"auto": a live progress bar on a terminal, one line per epoch in logs and CI (no bar redraws)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def last_metrics(model_dir: str) -> dict:
    """The last line of the run's metrics file, as a dict ({} before the first epoch)."""
    lines = rundir.read_jsonl(rundir.join(model_dir, rundir.METRICS))
    return lines[-1] if lines else {}


def _format_metrics(metrics: dict) -> str:
    shown = {k: v for k, v in metrics.items() if k not in ("learning_rate", "seconds", "wall_time")}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def _check_same_model(config: ml_collections.ConfigDict, model_dir: str) -> None:
    """A model_dir holds one model: resuming with another architecture would corrupt it."""
    path = rundir.join(model_dir, rundir.CONFIG)
    saved = rundir.read_json_object(path)
    if saved is None:
        return
    try:
        nn_config.from_dict(saved, path)
    except NntrainError as e:
        raise rundir.damaged(path, str(e).split(": ", 1)[-1]) from None
    current = nn_config.to_dict(config)
    if saved.get("model") != current["model"]:
        raise NntrainError(f"model_dir '{model_dir}' holds a run of another model ({saved.get('model')}); "
                           "use a new --model_dir, or the same model config to resume")
    changed = sorted(f"{section}.{key}" for section in current if isinstance(current[section], dict)
                     for key in current[section]
                     if saved.get(section, {}).get(key) != current[section][key])
    if changed:
        log(f"resuming with a changed config: {', '.join(changed)}")


def _check_metrics_file(model_dir: str) -> None:
    """metrics.jsonl is read (and rewritten) by a resume: one line now if it is damaged, not after a write."""
    path = rundir.join(model_dir, rundir.METRICS)
    for number, record in enumerate(rundir.read_jsonl(path), 1):
        if not isinstance(record.get("epoch"), int):
            raise rundir.damaged(path, f"line {number} has no epoch number")


def _check_same_data(spec: nn_data.DatasetSpec, model_dir: str) -> None:
    """A model_dir's weights fit one input shape and number of classes: resuming on other data is refused."""
    path = rundir.join(model_dir, rundir.DATASET)
    saved = rundir.read_json_object(path)
    if saved is None:
        return
    for key, new in (("input_shape", list(spec.input_shape)), ("num_classes", spec.num_classes)):
        if key in saved and saved[key] != new:
            raise NntrainError(f"model_dir '{model_dir}' holds a run on data of {key} {saved[key]}, this data has "
                               f"{key} {new}: use a new --model_dir, or the run's data to resume")


def _read_run_files(model_dir: str) -> dict[str, str | None]:
    """config.json and dataset.json as they are before a run writes them (restored if the run diverges)."""
    return {name: rundir.read_text(rundir.join(model_dir, name)) for name in (rundir.CONFIG, rundir.DATASET)}


def _write_run_files(model_dir: str, files: dict[str, str | None]) -> None:
    """Puts back the files `_read_run_files` read (those that were there)."""
    for name, text in files.items():
        path = rundir.join(model_dir, name)
        if text is not None and rundir.read_text(path) != text:
            rundir.write_text(path, text)


def _undo_uncommitted(model_dir: str, previous: dict[str, str | None], steps_per_epoch: int) -> None:
    """After a run that diverged: config.json and dataset.json as they were, and no metrics line for an epoch
    that no checkpoint committed (the line is written before the epoch's checkpoint)."""
    _write_run_files(model_dir, previous)
    latest = nn_callbacks.latest_checkpoint(rundir.checkpoint_dir(model_dir))
    committed = latest[1] // steps_per_epoch if latest else 0
    path = rundir.join(model_dir, rundir.METRICS)
    lines = rundir.read_jsonl(path)
    kept = [line for line in lines if line["epoch"] <= committed]
    if kept != lines:
        rundir.write_jsonl(path, kept)


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
