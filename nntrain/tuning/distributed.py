"""Distributed search: a chief serves keras-tuner's oracle over gRPC, workers run the trials.

Workers find the chief through keras-tuner's environment (KERASTUNER_TUNER_ID, KERASTUNER_ORACLE_IP,
KERASTUNER_ORACLE_PORT). The chief binds the address it is given (127.0.0.1 unless told otherwise). keras-tuner's
own chief waits forever for workers that died; this one hears a heartbeat from every worker, puts the trial of a
worker silent for `worker_timeout` seconds back in the queue, tells a worker with nothing to do to wait (not to
stop) while another worker's trial runs, so that someone is left to run that trial if it comes back, and when no
worker is left before the search is done it raises SearchIncomplete (after the caller has its results).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import keras_tuner

from nntrain.compat import keras_tuner_distributed as kt_internals
from nntrain.distribute import addresses, watchdog
from nntrain.errors import NntrainError
from nntrain.logs import log

ROLES = ("chief", "worker")
DEFAULT_ADDRESS = "127.0.0.1:8000"
HEARTBEAT_KEY = "nntrain-worker"
_ENV = ("KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT")
_POLL_S = 0.2
TrialStatus = keras_tuner.engine.trial.TrialStatus


class SearchIncomplete(NntrainError):
    """The chief stopped before the search was done: no worker was left."""

    exit_code = 1


def parse_address(address: str) -> tuple[str, int]:
    """(host, port) of `HOST:PORT`."""
    return addresses.host_port(address or "", "--oracle_address", f"--oracle_address={DEFAULT_ADDRESS}")


def worker_id(given: str | None) -> str:
    """The worker's id: `given`, or one from the host name and process id; never containing 'chief'."""
    name = given or f"worker-{socket.gethostname()}-{os.getpid()}"
    if "chief" in name:  # keras-tuner takes any id containing "chief" for the chief's
        raise NntrainError(f"--worker_id={name!r} must not contain 'chief': choose another name")
    return name


@contextlib.contextmanager
def worker_environment(host: str, port: int, tuner_id: str, rpc_timeout: float) -> Iterator[None]:
    """keras-tuner's worker environment, and a bound on every call to the chief (keras-tuner's is an hour)."""
    saved_env = {key: os.environ.get(key) for key in _ENV}
    os.environ.update(dict(zip(_ENV, (tuner_id, host, str(port)), strict=True)))
    try:
        with kt_internals.client_timeout(rpc_timeout):
            yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def wait_for_chief(host: str, port: int, timeout: float) -> None:
    """Returns once the chief accepts connections; NntrainError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(_POLL_S)
    raise NntrainError(f"no chief answers at {host}:{port} after {timeout:.0f} s: start `nntrain tune --role=chief "
                       f"--oracle_address={host}:{port}` first, or fix --oracle_address")


class Heartbeat:
    """A worker's background thread telling the chief every `interval` seconds that the worker is alive.

    When the chief has not answered for `timeout` seconds, the worker exits with one line: a trial may run for
    minutes without any other call to the chief.
    """

    def __init__(self, host: str, port: int, tuner_id: str, interval: float, timeout: float):
        self.target, self.tuner_id, self.interval, self.timeout = f"{host}:{port}", tuner_id, interval, timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nntrain-heartbeat", daemon=True)

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        with grpc.insecure_channel(self.target) as channel:
            stub = kt_internals.oracle_stub(channel)
            answered = time.monotonic()
            while True:
                with contextlib.suppress(grpc.RpcError):  # the chief may be busy or gone; try again
                    stub.GetSpace(kt_internals.get_space_request(), timeout=self.interval,
                                  metadata=((HEARTBEAT_KEY, self.tuner_id),))
                    answered = time.monotonic()
                if time.monotonic() - answered > self.timeout and not self._stop.is_set():
                    watchdog.exit_now(f"worker {self.tuner_id}: the chief at {self.target} has not answered for "
                                      f"{self.timeout:g} s (--worker_timeout): start it again with --resume, then "
                                      "the workers")
                if self._stop.wait(self.interval):
                    return


class _SupervisedServicer(kt_internals.OracleServicer):
    """keras-tuner's oracle service, noting when each worker was last heard from."""

    def __init__(self, oracle: keras_tuner.Oracle):
        super().__init__(oracle)
        self.last_seen: dict[str, float] = {}

    def GetSpace(self, request, context):  # noqa: N802 (gRPC method name)
        tuner_id = dict(context.invocation_metadata()).get(HEARTBEAT_KEY)
        if tuner_id:
            self.last_seen[tuner_id] = time.monotonic()
        return super().GetSpace(request, context)

    def CreateTrial(self, request, context):  # noqa: N802 (gRPC method name)
        self.last_seen[request.tuner_id] = time.monotonic()
        trial = _next_trial(self.oracle, request.tuner_id)
        if trial.status == TrialStatus.STOPPED:
            self.stop_triggered = True
        return kt_internals.create_trial_response(trial)


class PacedClient:
    """A worker's client of the chief (keras-tuner's OracleClient) that, told to wait, asks again after a pause:
    keras-tuner's worker asks again at once, as fast as the chief answers."""

    def __init__(self, client: object):
        self._client = client

    def __getattr__(self, name: str) -> object:
        return getattr(self._client, name)

    def create_trial(self, tuner_id: str) -> keras_tuner.engine.trial.Trial:
        trial = self._client.create_trial(tuner_id)
        if trial.status == TrialStatus.IDLE:
            time.sleep(_POLL_S)
        return trial


@keras_tuner.synchronized
def _next_trial(oracle: keras_tuner.Oracle, tuner_id: str) -> keras_tuner.engine.trial.Trial:
    """The oracle's next trial for `tuner_id`, but a wait (IDLE) where keras-tuner says stop while another worker's
    trial runs: that worker may die, and its trial must find a worker still there when it comes back."""
    trial = oracle.create_trial(tuner_id)
    if trial.status == TrialStatus.STOPPED and oracle.ongoing_trials:
        oracle.tuner_ids.add(tuner_id)  # keras-tuner forgets a worker it told to stop
        trial.status = TrialStatus.IDLE
    return trial


@keras_tuner.synchronized
def _drop_worker(oracle: keras_tuner.Oracle, tuner_id: str) -> str | None:
    """Forgets a silent worker; its running trial goes back to the queue. Returns that trial's id."""
    oracle.tuner_ids.discard(tuner_id)
    trial = oracle.ongoing_trials.pop(tuner_id, None)
    if trial is not None:
        kt_internals.requeue(oracle, trial.trial_id)
    oracle.save()
    return trial.trial_id if trial is not None else None


@keras_tuner.synchronized
def _finished(oracle: keras_tuner.Oracle, stop_triggered: bool) -> bool:
    """No trial running or queued, no worker waiting for an answer, and no trial left to start."""
    all_started = stop_triggered or bool(oracle.max_trials and len(oracle.end_order) >= oracle.max_trials)
    return all_started and not oracle.ongoing_trials and not kt_internals.has_requeued(oracle) and not oracle.tuner_ids


def serve(oracle: keras_tuner.Oracle, host: str, port: int, worker_timeout: float,
          on_trial_end: Callable[[str], None]) -> None:
    """Serves `oracle` on host:port until the search is done; SearchIncomplete if every worker went silent."""
    servicer = _SupervisedServicer(oracle)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    kt_internals.add_servicer(servicer, server)
    try:
        bound = server.add_insecure_port(f"{host}:{port}")
    except RuntimeError:
        bound = 0
    if not bound:
        raise NntrainError(f"the chief cannot listen on {host}:{port} (in use, or not this machine's address): "
                           "choose another --oracle_address")
    server.start()
    log(f"chief: serving the search on {host}:{port}; start workers with --role=worker --oracle_address={host}:{port}")
    reported, quiet_since = len(oracle.end_order), time.monotonic()
    try:
        while True:
            for trial_id in oracle.end_order[reported:]:
                on_trial_end(trial_id)
            reported = len(oracle.end_order)
            if _finished(oracle, servicer.stop_triggered):
                return
            now = time.monotonic()
            for silent in [w for w, seen in list(servicer.last_seen.items()) if now - seen > worker_timeout]:
                quiet_since = max(quiet_since, servicer.last_seen.pop(silent))
                lost = _drop_worker(oracle, silent)
                if lost is not None:
                    log(f"chief: worker {silent} silent for {worker_timeout:.0f} s; trial {lost} goes back to "
                        "the queue")
            if servicer.last_seen:
                quiet_since = max(list(servicer.last_seen.values()), default=quiet_since)
            elif now - quiet_since > worker_timeout:  # the last worker was heard from that long ago: no second wait
                raise SearchIncomplete(
                    f"no worker heard from for {worker_timeout:.0f} s and the search is not done "
                    f"({len(oracle.end_order)} trial(s) finished): start workers with --role=worker "
                    f"--oracle_address={host}:{port}, then the chief again with --resume")
            time.sleep(_POLL_S)
    finally:
        server.stop(grace=1)
