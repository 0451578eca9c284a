"""Checkpoints that make runs safe to stop: step-N/ bundles written while training goes on and committed by
state.json, with exact resume; the resume point and the restore of a checkpoint into a model."""

from __future__ import annotations

import dataclasses
import math
import re
import time
import warnings

import keras
import numpy as np

from nntrain import rundir
from nntrain.compat import keras_accumulation
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.run import bundles
from nntrain.run.callbacks import finite_loss, monitor_mode
from nntrain.run.preemption import Preempted, Watch

KERAS_SUFFIX = ".keras"  # the step checkpoints of runs before bundles: step-N.keras, RNG states in state.json


def _rng_variables(model: keras.Model) -> list[keras.Variable]:
    """The model's state that model.save leaves out: its SeedGenerator states (dropout, noise layers)."""
    weights = {id(w) for w in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def latest_checkpoint(directory: str) -> tuple[str, int] | None:
    """(path, step) of the last committed checkpoint, or None before the first one."""
    state = rundir.read_state(directory)
    if state is None:
        return None
    return rundir.join(directory, state["latest"]), int(state.get("step", 0))


@dataclasses.dataclass
class ResumePoint:
    """The checkpoint a run continues from, and state.json as the run continues with it."""

    path: str
    step: int
    state: dict


def resume_point(directory: str) -> ResumePoint | None:
    """State.json's latest checkpoint, checked to be readable; when it is not, the newest readable one state.json
    keeps (train.keep_checkpoints > 1), logged. None before the first checkpoint; Damaged if none is readable."""
    state = rundir.read_state(directory)
    if state is None:
        return None
    kept = [*[name for name in state.get("kept", []) if name != state["latest"]], state["latest"]]
    problems = []
    for index in reversed(range(len(kept))):
        name, path = kept[index], rundir.join(directory, kept[index])
        latest = name == state["latest"]
        step = state.get("step", 0) if latest else _step_of(name)
        problem = checkpoint_problem(path) if step is not None else "no step in its name"
        if problem is None:
            if latest:
                return ResumePoint(path, step, state)
            log(f"checkpoint {problems[0]}; resuming from {name} (step {step}), the last good one")
            fallback = {**state, "latest": name, "step": step, "kept": kept[:index + 1], "rng": []}
            fallback.pop("epoch", None)
            return ResumePoint(path, step, fallback)
        problems.append(f"{name} is unreadable ({problem})" if problem != "missing"
                        else f"{name}, named in {rundir.STATE}, is missing")
    raise rundir.Damaged(f"no readable checkpoint in {directory}: {'; '.join(problems)}: restore it, or delete "
                         f"{directory} to train from scratch (or use a new --model_dir)")


def _step_of(name: str) -> int | None:
    match = re.fullmatch(r"step-(\d+)(\.keras)?", name)
    return int(match.group(1)) if match else None


def checkpoint_problem(path: str) -> str | None:
    """Why the step checkpoint at `path` (a step-N/ bundle, or an older step-N.keras) cannot be read, or None."""
    return rundir.keras_file_problem(path) if path.endswith(KERAS_SUFFIX) else bundles.problem(path)


def restore(model: keras.Model, point: ResumePoint | None) -> int:
    """Loads a checkpoint (weights, optimizer state, RNG states) into a compiled model; returns its step."""
    if point is None:
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    optimizer = type(model.optimizer).__name__.lower()  # as optimizer.name says it (the object's name gets _N)
    wrong_optimizer = NntrainError(f"checkpoint {point.path} holds no state of this optimizer ({optimizer}): "
                                   "resume with the run's optimizer.name, or use a new --model_dir")
    if not point.path.endswith(KERAS_SUFFIX):
        try:
            bundles.read(model, point.path)
        except bundles.Mismatch as e:
            if e.group == "optimizer":
                raise wrong_optimizer from None
            raise _does_not_fit(point.path, str(e)) from None
        return keras_accumulation.training_steps(model.optimizer)
    try:
        with warnings.catch_warnings():  # a mismatch is refused below, in one line
            warnings.simplefilter("ignore")
            model.load_weights(point.path)
    except (ValueError, OSError, KeyError) as e:
        raise _does_not_fit(point.path, str(e).splitlines()[0][:200]) from None
    step = keras_accumulation.training_steps(model.optimizer)
    if point.step and step != point.step:  # Keras skips optimizer state it cannot match, and warns only
        raise wrong_optimizer
    for variable, value in zip(_rng_variables(model), point.state.get("rng", [])):  # in model order (names vary)
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return step


def _does_not_fit(path: str, detail: str) -> NntrainError:
    return NntrainError(f"checkpoint {path} does not fit this model ({detail}): resume with the run's own config "
                        "and data, or use a new --model_dir")


class Checkpoints(keras.callbacks.Callback):
    """A step checkpoint (`step-N/`: model, optimizer and RNG states) every `every_steps` steps, at every finite
    epoch end and on a preemption signal, written while training goes on (run/bundles.py); `state.json` names it
    once it is complete.

    Writing state.json is the commit point: a run killed at any moment, a write in flight included, resumes from a
    complete checkpoint. At most one write is in flight. The last `keep` checkpoints stay. `best.keras` (plain
    Keras) keeps the best epoch by `monitor` (unless `keep_best` is False: a multi-worker backup). Weights after a
    non-finite loss are never saved; non-finite weights after a finite loss (ReLU maps a NaN input to 0) stop
    training at the save, whose writer refuses them.

    An epoch's last execution saves nothing and answers no signal: its epoch end (validation, the metrics line)
    comes first, then the checkpoint that commits the epoch, then the stop; so a resumed run never skips an epoch's
    metrics line.
    """

    def __init__(self, directory: str, monitor: str, mode: str = "auto", keep_best: bool = True,
                 every_steps: int = 0, keep: int = 1, signals: Watch | None = None, state: dict | None = None):
        super().__init__()
        self.directory = directory
        self.monitor = monitor
        self.mode = monitor_mode(monitor, mode)
        self.keep_best = keep_best
        self.every_steps = every_steps
        self.keep = max(1, keep)
        self.signals = signals
        self.state = {"kept": [], "best": None, "step": 0,
                      **((rundir.read_state(directory) if state is None else state) or {})}
        self.writer = bundles.Writer()
        self.pending: dict | None = None  # state.json's fields once the write in flight is complete
        self.dropped: list[str] = []  # checkpoints state.json no longer names, removed by the next write's thread
        self.started: float | None = None  # when the write in flight started
        self.saved_seconds: list[float] = []  # from the start of each save to its commit (benchmarks read it)

    def on_train_begin(self, logs: dict | None = None) -> None:
        rundir.makedirs(self.directory)
        rundir.remove_partial_writes(self.directory, [*self.state["kept"], self.state.get("latest")])

    def _step(self) -> int:
        return keras_accumulation.training_steps(self.model.optimizer)

    def _saved_step(self) -> int:
        """The step of the newest checkpoint, committed or in flight."""
        return int((self.pending or self.state)["step"])

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.commit_if_written()
        if batch + 1 >= (self.params.get("steps") or math.inf):  # the epoch's last execution: on_epoch_end saves
            return
        # The step is read only where it decides something (a read is a device-to-host copy after every execution)
        due = bool(self.every_steps) and self._step() // self.every_steps > self._saved_step() // self.every_steps
        signum = self.signals.agreed(self.model.distribute_strategy) if self.signals else None
        if (due or signum) and finite_loss(logs):
            self.save(self._step())
        if signum:
            self._stop(signum)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        signum = self.signals.agreed(self.model.distribute_strategy) if self.signals else None
        if finite_loss(logs):
            self._end_epoch(epoch, logs or {})
        if signum:
            self._stop(signum)

    def _stop(self, signum: int) -> None:
        self.on_train_end()
        raise Preempted(signum, self.state["step"], self.directory)

    def _end_epoch(self, epoch: int, logs: dict) -> None:
        """The epoch's checkpoint (unless its step has one), best.keras if the epoch is the best, and the epoch
        number in state.json once the checkpoint is committed."""
        step = self._step()
        if step != self._saved_step():
            self.save(step)
        update = {"epoch": epoch + 1}
        value, best = logs.get(self.monitor), self.state["best"]
        if self.keep_best and value is not None and math.isfinite(float(value)) and (
                best is None or (value > best if self.mode == "max" else value < best)):
            self.wait()  # the epoch's checkpoint first: best.keras is only written of weights it accepted
            rundir.save_model(self.model, rundir.join(self.directory, rundir.BEST))
            update.update(best=float(value), best_epoch=epoch + 1)
        if self.pending is not None:
            self.pending.update(update)
        else:
            self.state.update(update)
            self._write_state()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.wait()
        for name in self.dropped:  # no next write to remove them
            rundir.remove(rundir.join(self.directory, name))
        self.dropped = []

    def save(self, step: int) -> None:
        """Starts writing step-`step`/ (after the write in flight, committed first); state.json names it once it is
        written (`commit_if_written`, `wait`).

        The write raises rundir.NonFiniteWeights, writing nothing, if a weight is NaN or infinite.
        """
        self.wait()
        name = f"step-{step}"
        self.started = time.perf_counter()
        self.writer.start(self.model, rundir.join(self.directory, name),
                          discard=[rundir.join(self.directory, dropped) for dropped in self.dropped])
        self.dropped = []
        self.pending = {**self.state, "step": step, "latest": name, "monitor": self.monitor, "mode": self.mode,
                        "kept": [*[k for k in self.state["kept"] if k != name], name]}
        self.pending.pop("rng", None)  # a bundle holds the RNG states

    def commit_if_written(self) -> None:
        """Commits the checkpoint in flight if its write has ended (never blocks)."""
        if self.pending is not None and not self.writer.busy():
            self.wait()

    def wait(self) -> None:
        """Waits for the write in flight and commits it: state.json names it."""
        if self.pending is None:
            return
        try:
            self.writer.wait()
        except BaseException:
            self.pending = None
            raise
        self.state, self.pending = self.pending, None
        self._write_state()
        self.saved_seconds.append(time.perf_counter() - self.started)

    def _write_state(self) -> None:
        """state.json; the checkpoints beyond the last `keep` are removed then, off the training thread (the next
        write's thread, or on_train_end): removing 573 MiB took ~0.1 s, and a checkpoint's budget is ~0.3 s."""
        kept = self.state["kept"]
        dropped, self.state["kept"] = kept[:-self.keep], kept[-self.keep:]
        rundir.write_json(rundir.join(self.directory, rundir.STATE), self.state)
        self.dropped += dropped
