"""TPU without a TPU: unreachable addresses and unknown names fail fast with advice (only 127.0.0.1 is contacted)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import closed_port

from nntrain.distribute import strategies
from nntrain.errors import NntrainError

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _no_metadata_server(monkeypatch):
    """A TPU name makes the resolver ask the GCE metadata server: point it at a closed local port."""
    monkeypatch.setenv("GCE_METADATA_HOST", f"127.0.0.1:{closed_port()}")


# In a separate process: connecting to a cluster changes TensorFlow's context for good.
CONNECT = """
import sys, time
import tensorflow
from nntrain.distribute import strategies
from nntrain.errors import NntrainError
start = time.time()
try:
    strategies.create_strategy("tpu", sys.argv[1])
except NntrainError as e:
    print(f"{time.time() - start:.1f}")
    print(e)
"""


def test_unreachable_tpu_address_fails_within_30_seconds():
    address = f"grpc://127.0.0.1:{closed_port()}"
    result = subprocess.run([sys.executable, "-c", CONNECT, address], capture_output=True, text=True, timeout=120,
                            cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    seconds, message = result.stdout.splitlines()[:2]
    assert float(seconds) < 30
    assert message.startswith(f"could not connect to TPU '{address}'")
    assert "Connection refused" in message and message.endswith("on a TPU VM use --tpu=local")


def test_unknown_tpu_name_says_names_need_google_cloud():
    start = time.time()
    with pytest.raises(NntrainError, match="could not look up TPU 'my-tpu': the GCE metadata server did not answer"):
        strategies.create_strategy("tpu", "my-tpu")
    assert time.time() - start < 30
