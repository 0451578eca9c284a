"""Each adapter in nntrain/compat/ reaches into a third-party internal; these tests fail when upstream changes it."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import grpc
import keras
import keras_tuner
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


def test_third_party_internals_are_reached_only_from_nntrain_compat():
    package = Path(nntrain.__file__).parent
    internal = re.compile(r"\b(keras_tuner\.src|tensorflow\.python|keras\.src)\b|\._collective_key_base|\._retry_queue")
    offenders = [f"{path.relative_to(package)}:{number}" for path in sorted(package.rglob("*.py"))
                 if "compat" not in path.relative_to(package).parts
                 for number, line in enumerate(path.read_text().splitlines(), 1) if internal.search(line)]
    assert offenders == []
