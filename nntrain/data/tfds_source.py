"""TensorFlow Datasets (`tfds:NAME`): read prepared data from data.data_dir; download only when reachable.

`tensorflow_datasets` is imported here, lazily, so other sources do not pay for it.
"""

from __future__ import annotations

import difflib
import os
import socket
import threading

import ml_collections
import tensorflow as tf

from nntrain.data import splits
from nntrain.distribute import addresses
from nntrain.errors import NntrainError

PROBE_ENV = "NNTRAIN_TFDS_PROBE_ADDRESS"  # HOST:PORT that must accept a connection before downloading
PROBE_DEFAULT = "storage.googleapis.com:443"
PROBE_SECONDS = 5.0


def reachable(address: str, seconds: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to HOST:PORT opens within `seconds`, name lookup included."""
    host, port = addresses.host_port(address, PROBE_ENV, PROBE_DEFAULT)
    opened: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=seconds):
                opened.append(True)
        except OSError:
            pass

    # A thread bounds the whole probe: socket timeouts do not cover DNS lookups.
    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(seconds)
    return bool(opened)


class TfdsSource:
    """One TFDS dataset, read `as_supervised` in its stored order (so text vocabularies are reproducible)."""

    def __init__(self, name: str, data_config: ml_collections.ConfigDict):
        import tensorflow_datasets as tfds

        self.name = f"tfds:{name}"
        self._dataset_name = name
        self._download = data_config.download
        self._read_config = tfds.ReadConfig(try_autocache=False)  # data.cache decides what is cached
        try:
            self._builder = tfds.builder(name, data_dir=data_config.data_dir)
        except tfds.core.registered.DatasetNotFoundError as e:
            close = difflib.get_close_matches(name, tfds.list_builders(with_community_datasets=False), n=1)
            hint = f"did you mean tfds:{close[0]}? " if close else ""
            raise NntrainError(f"unknown TFDS dataset '{name}' in data.source={self.name}: {hint}see "
                               "https://www.tensorflow.org/datasets/catalog, or use a local source "
                               "such as idx:DIR") from e
        info = self._builder.info
        if not info.supervised_keys:
            raise NntrainError(f"TFDS dataset '{name}' has no (input, label) supervised_keys: "
                               "pick a dataset that has them")
        # ClassLabel targets have num_classes; other targets are regression values.
        label = info.features[info.supervised_keys[1]]
        self.num_classes: int | None = getattr(label, "num_classes", None)
        self.class_names: tuple[str, ...] | None = tuple(label.names) if self.num_classes else None

    def select(self, spec: str) -> splits.Split:
        """The examples of a split spec, preparing the dataset first if it is not prepared yet."""
        try:
            dataset = self._as_dataset(spec)
        except AssertionError:  # as_dataset's way of saying it found no prepared data in data_dir
            self._prepare()
            dataset = self._as_dataset(spec)
        return splits.Split(dataset, int(dataset.cardinality()))  # TFDS asserts the cardinality

    def _as_dataset(self, spec: str) -> tf.data.Dataset:
        try:
            return self._builder.as_dataset(split=spec, as_supervised=True, shuffle_files=False,
                                            read_config=self._read_config)
        except ValueError as e:  # unknown split name or bad slice
            raise splits.bad_split(spec, self.name, e) from e

    def _prepare(self) -> None:
        if not self._download:
            raise self._not_prepared("data.download is false")
        address = os.environ.get(PROBE_ENV, PROBE_DEFAULT)
        if not reachable(address):
            raise self._not_prepared(f"its download host {address} is unreachable")
        try:
            self._builder.download_and_prepare()
        except Exception as e:  # network, checksum and manual-download failures all come in different types
            first_line = (str(e).strip().splitlines() or [""])[0]
            raise self._not_prepared(f"downloading failed ({type(e).__name__}: {first_line})") from e

    def _not_prepared(self, reason: str) -> NntrainError:
        name = self._dataset_name
        return NntrainError(
            f"TFDS dataset '{name}' is not prepared in {self._builder.data_dir_root} and {reason}: on a machine "
            f"with internet run `python -m tensorflow_datasets.scripts.download_and_prepare --datasets={name} "
            "--data_dir=DIR`, copy DIR here and pass --config.data.data_dir=DIR, or use local files with "
            "--config.data.source=idx:DIR (or npz:PATH, tfrecord:PATTERN)")
