"""SIGTERM/SIGINT during training: note the request, let the current execution finish, save, exit 143/130.

Schedulers (Kubernetes, Slurm, GCE preemption) send SIGTERM and wait a grace period (~30 s) before SIGKILL.
`watch()` turns the signal into a flag that the checkpoint callback reads after each execution; it then saves
that exact step and raises `Preempted`, whose exit code (128 + signal) tells a scheduler to restart the job.
Under multi-worker the workers agree after every step (one scalar all-reduce), so all save the same step.
The `nntrain train` process watches from its start (`watch(at_once=True)`, before TensorFlow is imported): during
start-up, before the run's first write, a signal stops it at once (`Stopped`); the trainer reuses that watch and
turns it into a flag for fit, its final evaluation and the final save.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING

from nntrain.errors import NntrainError

if TYPE_CHECKING:
    import tensorflow as tf

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Preempted(NntrainError):
    """Training stopped on a signal after saving a checkpoint; the same command resumes it.

    The CLI then ends the process at once (`exit_at_once`): everything is committed, and finalizing TensorFlow's
    threads took up to 18 s after the save under load, past a scheduler's grace period.
    """

    exit_at_once = True

    def __init__(self, signum: int, step: int, where: str):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} after step {step}, saved to {where}; run the "
                         "same command again to resume from that step")


class Stopped(NntrainError):
    """A signal during start-up, before the run's first write: the run directory is as it was."""

    exit_at_once = True

    def __init__(self, signum: int):
        self.exit_code = 128 + signum
        super().__init__(f"stopped by {signal.Signals(signum).name} while starting, before anything was written; "
                         "run the same command again to start (or resume) the run")


class Watch:
    """The first signal received while watching (None: none yet); while `at_once` (start-up), it raises Stopped."""

    def __init__(self, at_once: bool = False) -> None:
        self.signum: int | None = None
        self.at_once = at_once
        self._count_flagged = None  # multi-worker: a tf.function (eager collectives are slow and warn every step)

    def _handle(self, signum: int, frame: object) -> None:
        first = self.signum is None
        self.signum = self.signum or signum
        if self.at_once and first:
            raise Stopped(signum)

    def started(self) -> None:
        """Training begins (the first write comes next): from now on a signal is noted, and answered at a step."""
        self.at_once = False

    def agreed(self, strategy: tf.distribute.Strategy) -> int | None:
        """The signal to stop on, the same on every worker: under multi-worker one all-reduce tells every worker
        that one of them was signalled (then all save the same step); elsewhere this process's own signal."""
        import tensorflow as tf  # here: the CLI watches before TensorFlow is imported

        from nntrain.distribute import strategies

        if strategies.kind(strategy) != "multi_worker":
            return self.signum
        if self._count_flagged is None:
            @tf.function
            def count_flagged(flag: tf.Tensor) -> tf.Tensor:
                flagged = strategy.run(lambda: tf.identity(flag))
                return strategy.reduce(tf.distribute.ReduceOp.SUM, flagged, axis=None)
            self._count_flagged = count_flagged
        if int(self._count_flagged(tf.constant(1 if self.signum else 0))):
            return self.signum or signal.SIGTERM
        return None


@contextlib.contextmanager
def watch(at_once: bool = False) -> Iterator[Watch]:
    """Catches SIGTERM and SIGINT while the block runs (main thread only; elsewhere signals stay as they were).

    Inside another watch's block, that watch is the one used, its handlers set again: TensorFlow's multi-worker
    runtime takes SIGTERM over when it starts (Python still names its own handler).
    """
    handler = signal.getsignal(signal.SIGTERM)
    if isinstance(getattr(handler, "__self__", None), Watch):
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                signal.signal(s, handler)
        yield handler.__self__
        return
    state = Watch(at_once)
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    previous = {s: signal.signal(s, state._handle) for s in SIGNALS}
    try:
        yield state
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
