"""Multi-worker runs: who writes what, and a clear exit when a peer is lost (TF_CONFIG: tf_config.py).

Every worker runs the same command with the same `model_dir`, which all workers must be able to read (the
same path on one machine, `gs://...` on several hosts). The chief (worker 0) writes everything a run leaves
in `model_dir`; every other worker N writes only its own backups, into `model_dir/workers/N/`, so that two
workers never write one file. All workers resume from the chief's checkpoint, so they resume in step.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import keras
import tensorflow as tf

from nntrain import rundir
from nntrain.distribute import strategies
from nntrain.errors import NntrainError

# What a collective op raises when a peer has died or stopped answering.
PEER_ERRORS = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.AbortedError,
               tf.errors.CancelledError)


# The RPC a worker's coordination agent sends worker 0 every few seconds (TF 2.21: a silent task is lost after 10 s).
COORDINATION_HEARTBEAT = "/tensorflow.CoordinationService/Heartbeat"


class WorkerLost(NntrainError):
    """A peer worker stopped: this worker cannot go on alone."""

    exit_code = 1
    # Once its line is printed the process ends at once: TensorFlow's shutdown waits for the lost peers (17 s after
    # a peer's kill -9 on a loaded machine, tests/test_hosts.py), and nothing is left to save.
    exit_at_once = True


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """True where this process writes the run's outputs: always, except on non-chief multi-worker tasks."""
    return bool(strategy.extended.should_checkpoint)


def output_dir(model_dir: str, strategy: tf.distribute.Strategy) -> str:
    """model_dir for the chief, model_dir/workers/N for any other worker N."""
    if is_chief(strategy):
        return model_dir
    return rundir.worker_dir(model_dir, strategy.cluster_resolver.task_id)


@contextlib.contextmanager
def peer_failures(strategy: tf.distribute.Strategy) -> Iterator[None]:
    """Under multi-worker, turns the error of a lost peer into one line that says how to resume."""
    try:
        yield
    except PEER_ERRORS as e:
        if strategies.kind(strategy) != "multi_worker":
            raise
        me = strategy.cluster_resolver.task_id
        raise WorkerLost(f"worker {me} lost contact with {_lost_peers(e.message or '', me)} "
                         f"({type(e).__name__}); start all workers again with the same command to resume from the "
                         f"last checkpoint (TensorFlow's log: {strategies.tf_log_path()})") from e


def _lost_peers(message: str, me: int) -> str:
    """'worker 1' (or 'workers 1, 2') when TensorFlow's message names the tasks; worker 0 when this worker's
    heartbeat to the coordination service (which worker 0 runs) went unanswered; else 'its peers'."""
    peers = sorted({int(task) for task in re.findall(r"/job:worker(?:/replica:\d+)?/task:(\d+)", message)} - {me})
    if not peers and me != 0 and COORDINATION_HEARTBEAT in message:  # e.g. "Deadline Exceeded ... RPC: ...Heartbeat"
        peers = [0]
    if not peers and f"task:{me} heartbeat timeout" in message:  # e.g. its process was stopped (SIGSTOP) or starved
        return "its peers (this worker sent no heartbeat for longer than TensorFlow's timeout: stopped or starved)"
    if not peers:
        return "its peers (a worker stopped or is unreachable)"
    return f"worker{'s' if len(peers) > 1 else ''} {', '.join(map(str, peers))} (stopped or unreachable)"


def last_logs(history: keras.callbacks.History) -> dict:
    """A non-chief worker's final metrics, from fit's History (the chief's are in metrics.jsonl)."""
    if not history.epoch:
        return {}
    return {"epoch": history.epoch[-1] + 1, **{key: float(values[-1]) for key, values in history.history.items()}}
