"""tf.data service: run the training input pipeline on other processes or machines.

`data.service=grpc://HOST:PORT` sends the train pipeline through the dispatcher at that address: its workers
read, shuffle, preprocess and batch; the trainer only receives batches. Every worker runs the whole pipeline
(parallel epochs), which suits nntrain's repeated, shuffled train split; evaluation stays local, so it sees each
example once. `nntrain data-service --port=P --workers=N` starts a dispatcher and N workers for users who have none.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import threading
import time
from collections.abc import Iterator

import tensorflow as tf

from nntrain.distribute import addresses, watchdog
from nntrain.errors import NntrainError
from nntrain.logs import log

CONNECT_TIMEOUT_SECONDS = 5.0
WATCH_INTERVAL_SECONDS = 2.0  # how often a trainer checks that its dispatcher still answers
LISTENS = ("TensorFlow binds the dispatcher and workers to every interface (tf.data service cannot bind one "
           "address) without authentication: use it on a private network or firewall its ports")
_service = tf.data.experimental.service


def check_reachable(address: str) -> None:
    """Fails within seconds when no dispatcher listens at `address` (tf.data would wait for it forever)."""
    example = "--config.data.service=grpc://127.0.0.1:5050"
    if not address.startswith("grpc://"):
        raise NntrainError(f"data.service={address!r} is not grpc://HOST:PORT; write e.g. {example}")
    host, port = addresses.host_port(address.removeprefix("grpc://"), "data.service", example)
    try:
        with socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_SECONDS):
            pass
    except OSError as e:
        raise NntrainError(f"no tf.data service dispatcher answers at {address} ({e.strerror or e}): start one with "
                           f"`nntrain data-service --port={port} --workers=2`, or unset data.service") from e


@contextlib.contextmanager
def watched(address: str, timeout: float) -> Iterator[None]:
    """While the block trains from the dispatcher at `address` (nothing to watch when empty), ends the process in
    one line, exit 1, once the dispatcher has refused or ignored connections for `timeout` seconds: tf.data's client
    waits for a lost service forever, and training with it (seen with the service's host killed mid-epoch)."""
    if not address:
        yield
        return
    host, port = addresses.host_port(address.removeprefix("grpc://"), "data.service", address)
    interval, stop = min(WATCH_INTERVAL_SECONDS, timeout / 4), threading.Event()

    def watch() -> None:
        answered = time.monotonic()
        while not stop.wait(interval):
            try:
                socket.create_connection((host, port), timeout=interval).close()
                answered = time.monotonic()
            except OSError as e:
                if time.monotonic() - answered > timeout and not stop.is_set():
                    watchdog.exit_now(f"the tf.data service dispatcher at {address} has not answered for "
                                      f"{timeout:g} s (--worker_timeout; {e.strerror or e}): training cannot get "
                                      "batches; start the service again, then the same train command resumes from "
                                      "the last checkpoint")

    thread = threading.Thread(target=watch, name="nntrain-data-service-watch", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=10)


def distribute(dataset: tf.data.Dataset, address: str) -> tf.data.Dataset:
    """`dataset`, produced by the workers of the tf.data service at `address` (each runs all of it)."""
    check_reachable(address)
    return dataset.apply(_service.distribute(processing_mode=_service.ShardingPolicy.OFF, service=address))


@dataclasses.dataclass
class LocalService:
    """A dispatcher and its workers running in this process (listening on every interface: see LISTENS)."""

    dispatcher: tf.data.experimental.service.DispatchServer
    workers: list[tf.data.experimental.service.WorkerServer]
    host: str = "127.0.0.1"

    @property
    def address(self) -> str:
        """The dispatcher's grpc://HOST:PORT, for data.service."""
        return f"grpc://{self.host}:" + self.dispatcher.target.rpartition(":")[2]

    def stop(self) -> None:
        for server in [*self.workers, self.dispatcher]:
            server.stop()


def start(port: int = 0, workers: int = 2, host: str = "127.0.0.1") -> LocalService:
    """Starts a dispatcher on `port` (0: any free port) and `workers` workers; trainers reach them at `host`, this
    machine's address on their network (the workers tell trainers where to fetch; they listen everywhere: LISTENS)."""
    if workers < 1:
        raise NntrainError(f"--workers={workers}: a tf.data service needs at least 1 worker")
    if not 0 <= port < 65536:
        raise NntrainError(f"--port={port} is not a TCP port: use e.g. --port=5050")
    try:
        dispatcher = _service.DispatchServer(_service.DispatcherConfig(port=port))
    except tf.errors.OpError as e:
        raise NntrainError(f"cannot start a tf.data dispatcher on port {port} ({e.message.splitlines()[0]}): "
                           "choose another --port") from e
    address = "127.0.0.1:" + dispatcher.target.rpartition(":")[2]
    config = _service.WorkerConfig(dispatcher_address=address, worker_address=f"{host}:%port%", port=0)
    servers = [_service.WorkerServer(config) for _ in range(workers)]
    return LocalService(dispatcher, servers, host)


def serve(port: int, workers: int, max_seconds: float = 0, host: str = "127.0.0.1") -> None:
    """Runs a tf.data service until Ctrl-C (or for `max_seconds`, when > 0), reached by trainers at `host`."""
    if not 0 <= max_seconds < float("inf"):
        raise NntrainError(f"--max_seconds={max_seconds}: use 0 (run until Ctrl-C) or a number of seconds > 0")
    if not host.strip() or any(c.isspace() for c in host):
        raise NntrainError(f"--host={host!r}: give this machine's address that trainers reach, e.g. --host=10.0.0.5")
    service = start(port, workers, host)
    log(f"tf.data service: dispatcher at {service.address} with {workers} worker(s); train with "
        f"--config.data.service={service.address}; Ctrl-C stops it")
    log(f"tf.data service: {LISTENS}")
    deadline = time.time() + max_seconds if max_seconds > 0 else float("inf")
    try:
        while time.time() < deadline:
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
    except KeyboardInterrupt:
        log("tf.data service: stopping")
    finally:
        service.stop()
