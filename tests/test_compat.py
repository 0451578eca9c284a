"""Each adapter in nntrain/compat/ reaches into a third-party internal; these tests fail when upstream changes it."""

from __future__ import annotations

import inspect
import random
import re
from pathlib import Path

import grpc
import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api
from tensorflow.core.framework import types_pb2
from tensorflow.python.distribute import mirrored_strategy

import nntrain
from nntrain.benchmark import flops  # registers the Einsum count
from nntrain.compat import (
    collective_keys,
    ema_resume,
    keras_tuner_distributed,
    keras_tuner_hparams,
    process_state,
    tf_flops,
    tf_registry,
)


def test_mirrored_strategy_still_numbers_collectives_from_a_class_attribute():
    strategy_class = tf.distribute.MirroredStrategy
    default = strategy_class._collective_key_base
    assert isinstance(default, int)
    assert "_collective_key_base" in inspect.getsource(mirrored_strategy)  # TensorFlow still reads it
    with collective_keys.distinct_keys():
        assert strategy_class._collective_key_base > default
    assert strategy_class._collective_key_base == default


@pytest.mark.fast
def test_tensorflow_registries_answer_as_nntrain_expects():
    assert tf_registry.has_kernels("MatMul") and not tf_registry.has_kernels("NoSuchOpAnywhere")
    assert isinstance(tf_registry.has_kernels("ConfigureDistributedTPU"), bool)
    string_join = tf_registry.op_def("StringJoin")
    assert string_join.output_arg[0].type == types_pb2.DT_STRING
    assert tf_registry.op_def("NoSuchOpAnywhere") is None


def test_tensorflow_statistics_registry_and_deprecation_switch_exist():
    assert tf_flops.flops(7).value == 7
    assert not tf_flops.register_flops("Einsum", flops._einsum_flops)  # already registered on import
    with tf_flops.deprecation_silenced():
        pass


def test_keras_tuner_converts_hyperparameters_to_hparams():
    space = keras_tuner.HyperParameters()
    space.Float("base_learning_rate", 1e-3, 1e-1, sampling="log")
    space.Choice("train.batch_size", [2, 4])
    converted = {hparam.name: hparam.domain for hparam in keras_tuner_hparams.to_hparams(space, hparams_api)}
    assert isinstance(converted["base_learning_rate"], hparams_api.RealInterval)
    assert converted["train.batch_size"].values == [2, 4]


def test_swap_ema_weights_still_tracks_its_state_in_a_flag():
    assert ema_resume.swap_ema_weights(resumed=True)._ema_weights_in_model is True
    assert keras.callbacks.SwapEMAWeights(swap_on_epoch=True)._ema_weights_in_model is False
    source = inspect.getsource(keras.callbacks.SwapEMAWeights.on_epoch_begin)
    assert "self._ema_weights_in_model" in source  # the flag still decides whether the epoch starts with a swap


def test_keras_tuner_distributed_internals_are_where_nntrain_reaches_them():
    from keras_tuner.src.distribute import oracle_client

    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    assert not keras_tuner_distributed.has_requeued(oracle)
    keras_tuner_distributed.requeue(oracle, "7")
    assert keras_tuner_distributed.has_requeued(oracle) and oracle._retry_queue == ["7"]
    saved = oracle_client.TIMEOUT
    with keras_tuner_distributed.client_timeout(3.0):
        assert oracle_client.TIMEOUT == 3.0
    assert oracle_client.TIMEOUT == saved
    assert callable(keras_tuner_distributed.get_space_request)
    assert hasattr(keras_tuner_distributed.OracleServicer, "CreateTrial")
    with grpc.insecure_channel("127.0.0.1:9") as channel:
        assert hasattr(keras_tuner_distributed.oracle_stub(channel), "GetSpace")


@pytest.mark.fast
def test_third_party_internals_are_reached_only_from_nntrain_compat():
    package = Path(nntrain.__file__).parent
    internal = re.compile(r"\b(keras_tuner\.src|tensorflow\.python|keras\.src)\b|\._collective_key_base|\._retry_queue")
    offenders = [f"{path.relative_to(package)}:{number}" for path in sorted(package.rglob("*.py"))
                 if "compat" not in path.relative_to(package).parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if internal.search(line)]
    assert offenders == []


class _SeenInside(keras.callbacks.Callback):
    """What a run's process-wide settings are while it trains."""

    def on_train_begin(self, logs=None):
        self.policy = keras.mixed_precision.global_policy().name
        self.op_determinism = process_state.save().op_determinism


@pytest.mark.fast
def test_library_calls_leave_the_process_as_found(tmp_path):
    """After nntrain.train and nntrain.tune in mixed_bfloat16 with op determinism (and a float16 run without XLA,
    which turns grappler's remapper off), Keras's policy and seeds, TensorFlow's determinism, seed and grappler
    options, and Python's and NumPy's RNGs are what they were before; the run itself saw its own settings."""
    tiny = {"train.precision": "mixed_bfloat16", "train.deterministic": "true", "train.epochs": "1",
            "train.steps_per_epoch": "5"}
    random.seed(7)
    np.random.seed(7)
    keras.mixed_precision.global_policy()  # Keras's getter stores the default it returns; the asserts below call it
    before = process_state.save()
    try:
        seen = _SeenInside()
        nntrain.train(nntrain.load_config("xor", tiny), str(tmp_path / "run"), strategy="cpu", verbose=0,
                      callbacks=[seen])
        assert (seen.policy, seen.op_determinism) == ("mixed_bfloat16", True)
        assert (keras.mixed_precision.global_policy().name, process_state.save().op_determinism) == (
            "float32", before.op_determinism)
        nntrain.tune("xor", str(tmp_path / "search"), tiny, strategy="cpu", tuner="grid", max_trials=1,
                     verbose=False)
        nntrain.train(nntrain.load_config("xor", {**tiny, "train.precision": "mixed_float16",
                                                  "train.jit_compile": "false", "train.deterministic": "false"}),
                      str(tmp_path / "fp16"), strategy="cpu", verbose=0)
        after = process_state.save()
        assert keras.mixed_precision.global_policy().name == "float32"
        assert after.keras == before.keras
        assert (after.op_determinism, after.tf_seed, after.grappler) == (
            before.op_determinism, before.tf_seed, before.grappler)
        assert random.getstate() == before.python_random
        assert [np.array_equal(a, b) if isinstance(a, np.ndarray) else a == b
                for a, b in zip(np.random.get_state(), before.numpy_random)] == [True] * 5
        assert keras.layers.Dense(2).compute_dtype == "float32"  # last: its initializer draws from Python's RNG
    finally:  # a failure here must not leak into the tests that follow
        process_state.restore(before)
