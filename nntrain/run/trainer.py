"""`train(config, model_dir)`: build data and model under a strategy, fit with safe callbacks, save.

The run directory (its layout and every file in it) belongs to nntrain/rundir.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
import time
from collections.abc import Iterator, Sequence

import keras
import ml_collections
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import models, rundir
from nntrain.data import service as data_service
from nntrain.distribute import cluster, execution, strategies, tf_config
from nntrain.errors import NntrainError, op_message
from nntrain.logs import log
from nntrain.run import callbacks as nn_callbacks
from nntrain.run import checkpoints, finetune, guards, optim, preemption, prune, runstate
from nntrain.run import init_from as nn_init_from
from nntrain.run.bits_per_byte import BitsPerByte

# tf.data errors of a damaged file (bad CRC, truncated record, unparsable example, undecodable image, a file gone)
_DATA_ERRORS = (tf.errors.DataLossError, tf.errors.InvalidArgumentError, tf.errors.NotFoundError)
_INPUT_NODE = "IteratorGetNext"  # in the node name of every error the input pipeline raises


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


def prepare(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy, skip_batches: int = 0,
            resuming: bool = False) -> Prepared:
    """Builds the datasets (the train stream after `skip_batches` batches) and the compiled model under
    `strategy`; shared by train, tune and bench. A model about to be `resuming` from its checkpoint skips
    model.init_from."""
    seed_everything(config)
    data = datasets(config, strategy, skip_batches)
    steps_per_epoch = config.train.steps_per_epoch or data.steps_per_epoch
    model, run = build_model(config, data.spec, steps_per_epoch, strategy, init=not resuming)
    return Prepared(data, model, run, steps_per_epoch, strategy)


def datasets(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
              skip_batches: int) -> nn_data.Datasets:
    """The datasets of a run (or a tuner's trial): the train stream sized for the run's epochs, exactly
    resumable, started after `skip_batches` batches."""
    return nn_data.build(config.data, config.train.batch_size, strategy, seed=config.seed, skip_batches=skip_batches,
                         epochs=config.train.epochs, steps_per_epoch=config.train.steps_per_epoch)


def build_model(config: ml_collections.ConfigDict, spec: nn_data.DatasetSpec, steps_per_epoch: int,
                strategy: tf.distribute.Strategy, init: bool = True) -> tuple[keras.Model, execution.Execution]:
    """The model of `config`, seeded, started from model.init_from (if set and `init`) and compiled for
    `steps_per_epoch` steps per epoch under `strategy`.

    `prepare` and the tuner's HyperModel both build models here, so a trial trains exactly like `train`.
    """
    run = execution.resolve(config.train, strategy, steps_per_epoch)
    execution.apply_precision(run.precision)
    seed_everything(config)
    total_steps = steps_per_epoch * config.train.epochs
    with strategy.scope():
        model = models.build(config.model, spec)
        if init and config.model.init_from:
            nn_init_from.apply(model, config.model.init_from, spec.class_names)
        prune.attach(model, config.prune)
        model.compile(optimizer=optim.optimizer(config, total_steps), loss=optim.loss(config),
                      metrics=list(config.train.metrics), steps_per_execution=run.steps_per_execution,
                      jit_compile=run.jit_compile)
        finetune.setup(model, config)
    return model, run


def train(config: ml_collections.ConfigDict, model_dir: str,
          strategy: tf.distribute.Strategy | None = None, verbose: int | str = "auto",
          extra_callbacks: Sequence[keras.callbacks.Callback] = ()) -> dict:
    """Trains `config` into `model_dir`, resuming from its last checkpoint if there is one; returns final metrics.

    A resume is exact: the step, weights, optimizer and RNG states come from the checkpoint, and the data stream
    continues after the batches already consumed. SIGTERM/SIGINT save the current step and raise Preempted.
    """
    start = time.time()
    files = _validate(config, model_dir)
    strategy = strategy or strategies.create_strategy("auto")
    with cluster.peer_failures(strategy):  # building broadcasts the initial weights: a peer may be lost already
        run = _build_and_restore(config, strategy, files)
    nan_guard = _nan_guard(run)
    try:  # _fit makes the first writes (_begin), after the callbacks are built
        with preemption.watch() as signals:  # fit, its final evaluation and the final save answer a signal
            history = _fit(run, nan_guard, verbose, extra_callbacks, signals)
            _save_final_model(run, nan_guard)
        if signals.signum:  # it came after the last epoch's checkpoint: the run is complete, and stops as asked
            raise preemption.Preempted(signals.signum, run.prepared.steps_per_epoch * config.train.epochs,
                                       run.out_dir)
    except (TrainingDiverged, rundir.NonFiniteWeights):  # NaN weights after a finite loss: stopped at a save
        if run.chief:  # the settings that diverged are not the run's
            files.undo(run.prepared.steps_per_epoch)
        raise
    except _DATA_ERRORS as e:
        if _INPUT_NODE not in (e.message or ""):  # not raised by the input pipeline: a model's error
            raise
        if run.chief:  # as for a divergence: the run is left at its last checkpoint
            files.undo(run.prepared.steps_per_epoch)
        raise NntrainError(f"reading the data failed during training ({op_message(e)}): run with "
                           "--config.data.check=true to have the file named before training, or fix or re-convert "
                           "it") from e
    return _report(run, history, start)


@dataclasses.dataclass
class _Run:
    """A run between its steps: the config, the run directory's files, data and model, and where it starts."""

    config: ml_collections.ConfigDict
    files: runstate.RunState
    prepared: Prepared
    point: checkpoints.ResumePoint | None  # the checkpoint restored (None: from scratch)
    step: int  # the step training starts after
    chief: bool  # multi-worker: the chief writes model_dir; worker N only its backups (cluster.py)
    out_dir: str  # where this worker's checkpoints go

    @property
    def checkpoint_dir(self) -> str:
        """The chief's checkpoints, which every worker resumes from."""
        return rundir.checkpoint_dir(self.files.model_dir)

    @property
    def checkpoint_state(self) -> dict | None:
        """state.json as this worker's checkpoints continue it, as resume_point read it ({}: none yet); None for
        a multi-worker backup in workers/N, whose own state.json Checkpoints reads."""
        if self.out_dir != self.files.model_dir:
            return None
        return self.point.state if self.point else {}


def _validate(config: ml_collections.ConfigDict, model_dir: str) -> runstate.RunState:
    """The run directory's files against the config (which api.train validated); writes nothing."""
    nn_config.absolute_paths(config)  # a hand-made config too: its run works from any directory
    rundir.check(model_dir)
    files = runstate.RunState.load(model_dir)
    files.check_same_model(config)
    return files


def _build_and_restore(config: ml_collections.ConfigDict, strategy: tf.distribute.Strategy,
                       files: runstate.RunState) -> _Run:
    """Data and model, checked against the run's data; the checkpoint restored into the model. Writes nothing."""
    point = checkpoints.resume_point(rundir.checkpoint_dir(files.model_dir))
    prepared = prepare(config, strategy, skip_batches=point.step if point else 0, resuming=point is not None)
    guards.check_run(config, prepared)  # model_dir: rundir.check in _validate
    files.check_same_data(prepared.data.spec)
    with strategy.scope():
        step = checkpoints.restore(prepared.model, point)
    _log_plan(config, prepared)
    return _Run(config, files, prepared, point, step, cluster.is_chief(strategy),
                cluster.output_dir(files.model_dir, strategy))


def _nan_guard(run: _Run) -> nn_callbacks.StopOnNaN:
    """The NaN guard, which knows the last finite loss (the metrics line of the checkpoint's epoch)."""
    done = run.files.metrics_until(run.step // run.prepared.steps_per_epoch)
    return nn_callbacks.StopOnNaN(run.prepared.steps_per_epoch, done[-1].get("loss") if done else None)


def _begin(run: _Run) -> None:
    """The first writes: this worker's directory; the chief's config.json, dataset.json and metrics.jsonl (no
    line after the checkpoint's epoch)."""
    config, files, steps_per_epoch = run.config, run.files, run.prepared.steps_per_epoch
    rundir.makedirs(run.out_dir)
    initial_epoch = run.step // steps_per_epoch
    if run.chief:
        nn_config.save(config, files.model_dir)
        nn_data.save_spec(run.prepared.data.spec, files.model_dir)
        files.keep_metrics(initial_epoch)
    if run.step:
        log(f"resuming from the checkpoint in {run.checkpoint_dir}: step {run.step} of "
            f"{steps_per_epoch * config.train.epochs} ({initial_epoch} of {config.train.epochs} epochs done)")


def _fit(run: _Run, nan_guard: nn_callbacks.StopOnNaN, verbose: int | str,
         extra_callbacks: Sequence[keras.callbacks.Callback],
         signals: preemption.Watch) -> keras.callbacks.History | None:
    """The callbacks (an experiment's get_callbacks may fail: before the first write), the first writes (_begin),
    then fit; a signal stops fit at a step (Preempted), or is in `signals` after the last epoch's checkpoint."""
    with cluster.peer_failures(run.prepared.strategy), \
            data_service.watched(run.config.data.service, tf_config.worker_timeout()):
        callbacks = nn_callbacks.callbacks_for(
            run.config, run.prepared.model, run.prepared.steps_per_epoch, nan_guard,
            checkpoints=_checkpoints(run, signals), metrics_file=run.files if run.chief else None,
            tensorboard_dir=_tensorboard_dir(run), resumed=run.step > 0)
        signals.started()  # a signal from here on is answered at a step, with a checkpoint
        _begin(run)
        fit = dict(validation_steps=run.config.train.eval_steps, callbacks=[*callbacks, *extra_callbacks],
                   verbose=_progress(verbose), shuffle=False)
        with _tensorboard_flushed_on_stop(callbacks):
            return _fit_epochs(run, fit)


def _fit_epochs(run: _Run, fit: dict) -> keras.callbacks.History | None:
    """model.fit to config.train.epochs: first the rest of an interrupted epoch, on the rest of its stream."""
    config, prepared = run.config, run.prepared
    model, strategy, steps_per_epoch = prepared.model, prepared.strategy, prepared.steps_per_epoch
    initial_epoch, steps_into_epoch = divmod(run.step, steps_per_epoch)
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
    return history


@contextlib.contextmanager
def _tensorboard_flushed_on_stop(callbacks: Sequence[keras.callbacks.Callback]) -> Iterator[None]:
    """A run stopped by a signal ends at once (cli.py): TensorBoard's events are written out first, and a text
    run's unigram-entropy line is logged (fit skips on_train_end)."""
    try:
        yield
    except preemption.Preempted:
        for callback in callbacks:
            if isinstance(callback, (keras.callbacks.TensorBoard, BitsPerByte)):
                callback.on_train_end()
        raise


def _checkpoints(run: _Run, signals: preemption.Watch) -> checkpoints.Checkpoints:
    """This worker's checkpoints (the chief's in model_dir keep best.keras; a multi-worker backup's do not)."""
    train = run.config.train
    return checkpoints.Checkpoints(rundir.checkpoint_dir(run.out_dir), train.monitor, train.monitor_mode,
                                   keep_best=run.chief, every_steps=train.checkpoint_every_steps,
                                   keep=train.keep_checkpoints, signals=signals, state=run.checkpoint_state)


def _tensorboard_dir(run: _Run) -> str | None:
    """model_dir/logs with train.tensorboard, on the chief; else None."""
    if not (run.config.train.tensorboard and run.chief):
        return None
    model_dir = run.files.model_dir
    log_dir = rundir.join(model_dir, rundir.LOGS)
    log(f"TensorBoard logs: {log_dir} (tensorboard --logdir={model_dir})")
    return log_dir


def _save_final_model(run: _Run, nan_guard: nn_callbacks.StopOnNaN) -> None:
    """TrainingDiverged if the loss became NaN/inf; else the chief saves model.keras (never NaN weights)."""
    if nan_guard.nan_step is not None:
        latest = checkpoints.latest_checkpoint(run.checkpoint_dir)
        kept = f"{latest[0]} (step {latest[1]})" if latest else "none (nothing saved yet)"
        raise TrainingDiverged(f"{nan_guard.describe()}; checkpoint kept: {kept}; lower optimizer.learning_rate "
                               "or set optimizer.global_clip_norm")
    if run.chief:
        rundir.save_model(run.prepared.model, rundir.join(run.files.model_dir, rundir.FINAL_MODEL))


def _report(run: _Run, history: keras.callbacks.History | None, start: float) -> dict:
    """The final metrics, logged: the chief's last metrics line, a worker's from fit's History."""
    if not run.chief:
        metrics = cluster.last_logs(history) if history else {}
        log(f"worker done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; the chief saves the model")
        return metrics
    metrics = run.files.metrics[-1] if run.files.metrics else {}
    log(f"done in {time.time() - start:.1f}s: {_format_metrics(metrics)}; model saved to "
        f"{rundir.join(run.files.model_dir, rundir.FINAL_MODEL)}")
    return metrics


def _progress(verbose: int | str) -> int | str:
    """"auto": a live progress bar on a terminal, one line per epoch in logs and CI (no bar redraws)."""
    if verbose == "auto":
        return 1 if sys.stdout.isatty() else 2
    return verbose


def _format_metrics(metrics: dict) -> str:
    shown = {k: v for k, v in metrics.items() if k not in ("learning_rate", "seconds", "wall_time")}
    return ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


def _log_plan(config: ml_collections.ConfigDict, prepared: Prepared) -> None:
    data, run = prepared.data, prepared.execution
    log(f"experiment {config.get('experiment', '?')}: {config.data.source} -> {config.model.name} "
        f"({prepared.model.count_params():,} parameters)")
    log(f"strategy: {strategies.describe(prepared.strategy)}")
    log(f"global batch {data.global_batch_size} = {data.per_replica_batch_size} per replica x "
        f"{data.num_replicas} replica(s); {prepared.steps_per_epoch} steps/epoch; {data.spec.train_examples} train / "
        f"{data.spec.eval_examples} eval examples")
    why = f" ({run.why_precision})" if run.why_precision else ""
    log(f"precision {run.precision}{why}, steps_per_execution {run.steps_per_execution}, "
        f"jit_compile {run.jit_compile}")
