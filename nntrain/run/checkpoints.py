"""Checkpoints that make runs safe to stop: step-N.keras and state.json with exact resume, the resume point and
the restore of a checkpoint into a model."""

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
from nntrain.run.callbacks import finite_loss, monitor_mode
from nntrain.run.preemption import Preempted, Watch


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
        problem = rundir.keras_file_problem(path) if step is not None else "no step in its name"
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
    match = re.fullmatch(r"step-(\d+)\.keras", name)
    return int(match.group(1)) if match else None


def restore(model: keras.Model, point: ResumePoint | None) -> int:
    """Loads a checkpoint (weights, optimizer state, RNG states) into a compiled model; returns its step."""
    if point is None:
        return 0
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    try:
        with warnings.catch_warnings():  # a mismatch is refused below, in one line
            warnings.simplefilter("ignore")
            model.load_weights(point.path)
    except (ValueError, OSError, KeyError) as e:
        raise NntrainError(f"checkpoint {point.path} does not fit this model ({str(e).splitlines()[0][:200]}): "
                           "resume with the run's own config and data, or use a new --model_dir") from None
    step = keras_accumulation.training_steps(model.optimizer)
    if point.step and step != point.step:  # Keras skips optimizer state it cannot match, and warns only
        name = type(model.optimizer).__name__.lower()  # as optimizer.name says it (the object's name gets _N)
        raise NntrainError(f"checkpoint {point.path} holds no state of this optimizer ({name}): "
                           "resume with the run's optimizer.name, or use a new --model_dir")
    for variable, value in zip(_rng_variables(model), point.state.get("rng", [])):  # in model order (names vary)
        variable.assign(np.asarray(value, dtype=variable.dtype))
    return step


class Checkpoints(keras.callbacks.Callback):
    """`step-N.keras` (model + optimizer state) every `every_steps` steps, at every finite epoch end and on a
    preemption signal; then `state.json` naming it, with the RNG states that .keras does not save.

    Writing state.json is the commit point: a run killed at any moment resumes from a complete checkpoint. The
    last `keep` checkpoints stay. `best.keras` keeps the best epoch by `monitor` (unless `keep_best` is False: a
    multi-worker backup). Weights after a non-finite loss are never saved; non-finite weights after a finite loss
    (ReLU maps a NaN input to 0) stop training at the save, which refuses them (`rundir.save_model`).
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
        self.saved_seconds: list[float] = []  # how long each save took (benchmarks read it)

    def on_train_begin(self, logs: dict | None = None) -> None:
        rundir.remove_partial_writes(self.directory)

    def _step(self) -> int:
        return keras_accumulation.training_steps(self.model.optimizer)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        step, last = self._step(), int(self.state["step"])
        due = self.every_steps and step // self.every_steps > last // self.every_steps
        signum = self.signals.agreed(self.model.distribute_strategy) if self.signals else None
        if (due or signum) and finite_loss(logs):
            self.save(step)
        if signum:
            raise Preempted(signum, self.state["step"], self.directory)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if not finite_loss(logs):
            return
        step = self._step()
        if step != self.state["step"]:
            self.save(step, commit=False)
        value = (logs or {}).get(self.monitor)
        best = self.state["best"]
        if self.keep_best and value is not None and math.isfinite(float(value)) and (
                best is None or (value > best if self.mode == "max" else value < best)):
            rundir.copy(rundir.join(self.directory, self.state["latest"]), rundir.join(self.directory, rundir.BEST))
            self.state.update(best=float(value), best_epoch=epoch + 1)
        self.state["epoch"] = epoch + 1
        self._commit()

    def save(self, step: int, commit: bool = True) -> None:
        """Writes step-`step`.keras and (unless commit is False) state.json naming it.

        Raises rundir.NonFiniteWeights, writing nothing, if a weight is NaN or infinite.
        """
        start = time.perf_counter()
        rundir.makedirs(self.directory)
        name = f"step-{step}.keras"
        rundir.save_model(self.model, rundir.join(self.directory, name))
        self.state.update(step=step, latest=name, monitor=self.monitor, mode=self.mode,
                          kept=[*[k for k in self.state["kept"] if k != name], name],
                          rng=[keras.ops.convert_to_numpy(v).tolist() for v in _rng_variables(self.model)])
        if commit:
            self._commit()
        self.saved_seconds.append(time.perf_counter() - start)

    def _commit(self) -> None:
        """state.json last; then the checkpoints beyond the last `keep` go."""
        kept = self.state["kept"]
        dropped, self.state["kept"] = kept[:-self.keep], kept[-self.keep:]
        rundir.write_json(rundir.join(self.directory, rundir.STATE), self.state)
        for name in dropped:
            rundir.remove(rundir.join(self.directory, name))
