"""Property tests (hypothesis): whatever a user types, the parsers answer with a value or one NntrainError.

Thousands of generated inputs for the override parser, config validation, split specs and HOST:PORT parsing;
none may raise anything else (a traceback for the user) or write a file. Derandomized: CI runs the same inputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntrain import config as nn_config
from nntrain.data import splits
from nntrain.distribute import addresses, tf_config
from nntrain.errors import NntrainError
from nntrain.tuning import distributed

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _keys(config, prefix: str = "") -> list[str]:
    keys = []
    for key, value in config.items():
        keys += _keys(value, f"{prefix}{key}.") if hasattr(value, "items") else [f"{prefix}{key}"]
    return keys


KEYS = _keys(nn_config.base_config())
TRICKY = ["inf", "-inf", "nan", "1e999", "-0", "0", "None", "null", "true", "()", "[]", ",", "1,2,", "((1,2))",
          "'x'", "\"", "0x10", "1_000", "10**9", "-1", "1.5", "", " ", "(" * 300, "\x00", "é", "[1, [2]]"]
values = st.one_of(st.sampled_from(TRICKY), st.text(max_size=30),
                   st.from_regex(r"-?[0-9]{0,4}(\.[0-9]{0,3})?(e-?[0-9]{1,3})?", fullmatch=True))
keys = st.one_of(st.sampled_from(KEYS), st.text(alphabet="abcdefghijklmnopqrstuvwxyz_.", max_size=25))


def _only_user_errors(call, *args):
    try:
        return call(*args)
    except NntrainError as e:
        assert str(e) and "\n" not in str(e), repr(str(e))  # one line
        return None


@pytest.fixture
def quiet_cwd(tmp_path, monkeypatch):
    """Runs in an empty directory, which must stay empty."""
    monkeypatch.chdir(tmp_path)
    yield tmp_path
    assert not any(Path(tmp_path).iterdir())


@settings(FUZZ, max_examples=1500)
@given(st.text(max_size=40))
def test_override_flag_parser(text):
    parsed = _only_user_errors(nn_config.parse_override, "--config." + text)
    if parsed is not None:
        key, value = parsed
        assert key and f"{key}={value}" == text


@settings(FUZZ, max_examples=2000)
@given(st.lists(st.tuples(keys, values), min_size=1, max_size=3))
def test_overrides_and_validation(quiet_cwd, overrides):
    config = nn_config.base_config()
    with config.unlocked():
        config.experiment = "fuzz"
    if _only_user_errors(lambda: nn_config.apply_overrides(config, overrides) or True):
        _only_user_errors(nn_config.validate, config)


SIZES = {"train": 60, "test": 10}
spec_text = st.text(alphabet="traintes[]:%+-0123456789. _", max_size=24)


@settings(FUZZ, max_examples=1500)
@given(st.one_of(spec_text, st.text(max_size=16)))
def test_split_specs(spec):
    result = _only_user_errors(splits.ranges, spec, SIZES, "npz:fuzz.npz")
    for name, start, stop in result or []:
        assert name in SIZES and 0 <= start <= stop <= SIZES[name]


plain_part = st.builds(lambda name, start, stop: f"{name}[{'' if start is None else start}:"
                                                f"{'' if stop is None else stop}]" if (start, stop) != (0, 0) else name,
                       st.sampled_from([*SIZES, "valid"]), st.none() | st.integers(-80, 80),
                       st.none() | st.integers(-80, 80))


@settings(FUZZ, max_examples=1500)
@given(st.one_of(spec_text, st.lists(plain_part, min_size=1, max_size=3).map(" + ".join)))
@pytest.mark.fast
def test_split_specs_resolve_without_tfds_as_tfds_resolves_them(spec):
    """The fast path that spares a run TFDS's import gives TFDS's ranges, and leaves everything else to it."""
    plain = splits._plain_ranges(spec, SIZES)
    if plain is not None:
        assert plain == splits._tfds_ranges(spec, SIZES, "npz:fuzz.npz")


address_text = st.one_of(st.text(max_size=30), st.from_regex(r"[a-z0-9.:\[\]-]{0,20}:[0-9]{0,6}", fullmatch=True))


@settings(FUZZ, max_examples=2000)
@given(address_text)
def test_host_port(address):
    parsed = _only_user_errors(addresses.host_port, address, "--flag", "--flag=127.0.0.1:8000")
    if parsed is not None:
        host, port = parsed
        assert host and 0 < port < 65536
    _only_user_errors(distributed.parse_address, address)


@settings(FUZZ, max_examples=1000)
@given(st.lists(address_text, max_size=4).map(",".join), st.one_of(st.none(), st.integers(-3, 6)))
def test_worker_hosts(monkeypatch, hosts, index):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    built = _only_user_errors(tf_config.build, hosts, index)
    if built is not None:
        assert 0 <= built["task"]["index"] < len(built["cluster"]["worker"])
    assert "TF_CONFIG" not in os.environ
