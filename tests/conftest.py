"""Shared test setup: two logical CPU devices (for MirroredStrategy tests), isolation fixtures, a data config."""

import hashlib
import os
from pathlib import Path

# Cloud Storage, read once when TensorFlow registers its filesystem: a failed request is not retried (10 times with
# backoff, minutes), and no GCE metadata server is probed for credentials (seconds).
os.environ.setdefault("GCS_RETRY_CONFIG_MAX_RETRIES", "0")
os.environ.setdefault("NO_GCE_CHECK", "true")
# precision=auto is float32 in tests on every CPU (bf16 where the CPU has it otherwise), in this process and in the
# nntrain processes tests start: results do not depend on the machine. tests/test_precision.py checks both choices.
os.environ["NNTRAIN_CPUINFO"] = os.devnull
# XLA compiles without LLVM's optimisation passes, here and in the processes tests start: a test runs each compiled
# program (a preflight step, a sampling loop) once or a few times, so optimising it costs more than it saves. Same
# programs, same semantics; the preflight, sampling, generate and gpt tests take ~17% less CPU.
os.environ.setdefault("XLA_FLAGS", "--xla_backend_optimization_level=0")

import keras  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

from nntrain.config import base_config  # noqa: E402
from nntrain.distribute import launch  # noqa: E402

# Split the CPU into two logical devices once, before TensorFlow initialises its runtime.
_CPUS = tf.config.list_physical_devices("CPU")
if tf.config.get_logical_device_configuration(_CPUS[0]) is None:
    tf.config.set_logical_device_configuration(_CPUS[0], [tf.config.LogicalDeviceConfiguration()] * 2)


# `make test` runs the suite on pytest-xdist workers, a test module at a time (--dist loadfile: its module
# fixtures, such as a shared reference run, are made once), in this order (--no-loadscope-reorder): the longest
# modules first (as measured in a whole run), so that no worker is left with a long one at the end.
_LONGEST_FIRST = ("test_docs", "test_finetune", "test_checkpoints", "test_resume_streams", "test_hosts", "test_tune",
                  "test_preemption", "test_gpt", "test_training", "test_experiments", "test_preflight", "test_export",
                  "test_optimizer_features", "test_generate", "test_cli_json", "test_cli_usage")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Puts the longest modules first (a stable sort: the rest keep their order)."""
    rank = {name: i for i, name in enumerate(_LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.stem, len(rank)))


def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    if not root.exists():
        return {}
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def cli_failures(cases: list[tuple[str, list[str], str]], root: Path, capfd) -> list[str]:
    """Runs each (name, arguments, phrase) through the CLI in-process; returns what went wrong with each: an exit
    code of 0, a traceback, other than one `nntrain: error:` line holding the phrase, or a changed file under root."""
    from nntrain import cli

    before = snapshot(root)
    failures = []
    for name, args, phrase in cases:
        with pytest.raises(SystemExit) as exit_info:
            cli.run(["nntrain", *args])
        _, err = capfd.readouterr()
        error_lines = [line for line in err.splitlines() if "error" in line.lower()]
        problems = []
        if exit_info.value.code in (0, None):
            problems.append(f"exit code {exit_info.value.code}")
        if "Traceback" in err:
            problems.append("traceback")
        if len(error_lines) != 1 or not error_lines[0].startswith("nntrain: error: "):
            problems.append(f"error lines {error_lines}")
        elif phrase not in error_lines[0]:
            problems.append(f"'{phrase}' not in {error_lines[0]!r}")
        if snapshot(root) != before:
            problems.append("files changed")
        if problems:
            failures.append(f"{name}: {'; '.join(problems)}")
    return failures


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


@pytest.fixture(scope="session")
def wheel(tmp_path_factory) -> Path:
    """nntrain's wheel, built once per session from a copy of the package files (tests/wheel_env.py)."""
    import wheel_env

    return wheel_env.build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="session")
def installed(wheel, tmp_path_factory) -> Path:
    """The wheel installed (not editable) in a fresh venv, shared by test_wheel.py and test_docs.py."""
    import wheel_env

    return wheel_env.install(wheel, tmp_path_factory.mktemp("envs") / "installed")
