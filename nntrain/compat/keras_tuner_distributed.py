"""keras-tuner's distributed-tuning internals (`keras_tuner.src`, keras-tuner 1.4.8), which nntrain needs to work
around keras-team/keras-tuner#915: a worker that fails or dies stalls the chief, which waits for it forever.

`nntrain/tuning/distributed.py` serves the oracle itself with a servicer that notes each worker's heartbeat,
bounds each worker's calls to the chief, and puts a silent worker's trial back in the oracle's retry queue (what
keras-tuner's own reload does with unfinished trials). Everything it needs from keras-tuner's internals is here.

Delete this module once keras-tuner supervises its workers; `tests/test_compat.py::
test_keras_tuner_distributed_internals_are_where_nntrain_reaches_them` fails when keras-tuner moves them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import keras_tuner
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_chief, oracle_client

OracleServicer = oracle_chief.OracleServicer  # the chief's gRPC service around an oracle


def oracle_stub(channel: grpc.Channel):
    """A client of the chief's oracle service on `channel`."""
    return protos.get_service_grpc().OracleStub(channel)


def get_space_request():
    """The cheapest request the service answers (a worker's heartbeat)."""
    return protos.get_service().GetSpaceRequest()


def create_trial_response(trial: keras_tuner.engine.trial.Trial):
    """The service's answer to a worker asking for a trial."""
    return protos.get_service().CreateTrialResponse(trial=trial.to_proto())


def add_servicer(servicer: OracleServicer, server: grpc.Server) -> None:
    """Serves `servicer` on `server`."""
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)


@contextlib.contextmanager
def client_timeout(seconds: float) -> Iterator[None]:
    """Bounds every call a worker makes to the chief (keras-tuner's own bound is an hour)."""
    saved = oracle_client.TIMEOUT
    oracle_client.TIMEOUT = seconds
    try:
        yield
    finally:
        oracle_client.TIMEOUT = saved


def requeue(oracle: keras_tuner.Oracle, trial_id: str) -> None:
    """Puts a trial back in the oracle's retry queue, to be handed to the next worker that asks."""
    oracle._retry_queue.append(trial_id)


def has_requeued(oracle: keras_tuner.Oracle) -> bool:
    """True while the oracle's retry queue holds a trial."""
    return bool(oracle._retry_queue)
