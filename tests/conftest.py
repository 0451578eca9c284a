"""Shared test setup: two logical CPU devices (for MirroredStrategy tests), isolation fixtures, a data config."""

import keras
import pytest
import tensorflow as tf

from nntrain import launch
from nntrain.config import base_config

# Split the CPU into two logical devices once, before TensorFlow initialises its runtime.
_CPUS = tf.config.list_physical_devices("CPU")
if tf.config.get_logical_device_configuration(_CPUS[0]) is None:
    tf.config.set_logical_device_configuration(_CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def closed_port() -> int:
    """A local TCP port nothing listens on."""
    return launch.free_ports(1)[0]


@pytest.fixture(autouse=True)
def _no_tfds_download_host(monkeypatch):
    """Tests never reach the real TFDS download host: its probe goes to a closed local port."""
    monkeypatch.setenv("NNTRAIN_TFDS_PROBE_ADDRESS", f"127.0.0.1:{closed_port()}")


@pytest.fixture(autouse=True)
def _float32_policy_after_each_test():
    """A test that trains in mixed precision must not leak its global dtype policy into the next one."""
    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def data_config():
    """The default data config, small and quick: no TFDS download, small batches of shuffling."""
    config = base_config().data
    config.download = False
    config.shuffle_buffer = 64
    return config
