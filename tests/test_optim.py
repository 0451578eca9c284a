"""Optimizers, schedules (with warmup), clipping and losses from the config."""

from __future__ import annotations

import keras
import numpy as np
import pytest

import nntrain
from nntrain import optim
from nntrain.errors import NntrainError


def _config(**overrides):
    return nntrain.load_config("mnist_mlp", overrides)


@pytest.mark.parametrize("name, cls", [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam),
                                       ("adamw", keras.optimizers.AdamW), ("adagrad", keras.optimizers.Adagrad),
                                       ("rmsprop", keras.optimizers.RMSprop)])
def test_optimizers_by_name(name, cls):
    optimizer = optim.optimizer(_config(**{"optimizer.name": name, "optimizer.global_clip_norm": 1.0}), 100)
    assert type(optimizer) is cls
    assert optimizer.global_clipnorm == 1.0


@pytest.mark.parametrize("clip, attribute", [("clip_value", "clipvalue"), ("clip_norm", "clipnorm")])
def test_sgd_momentum_nesterov_and_clipping(clip, attribute):
    config = _config(**{"optimizer.name": "sgd", "optimizer.momentum": 0.8, "optimizer.nesterov": True,
                        f"optimizer.{clip}": 0.5})
    sgd = optim.optimizer(config, 100)
    assert (sgd.momentum, sgd.nesterov, getattr(sgd, attribute)) == (0.8, True, 0.5)


def test_two_kinds_of_clipping_is_an_error():
    with pytest.raises(NntrainError, match="clip_norm and global_clip_norm"):
        _config(**{"optimizer.clip_norm": 1.0, "optimizer.global_clip_norm": 1.0})


@pytest.mark.parametrize("schedule, end_rate", [("constant", 0.1), ("exponential", 0.01), ("linear", 0.0),
                                                ("polynomial", 0.0), ("cosine", 0.0)])
def test_schedules_start_at_base_rate_and_end_where_configured(schedule, end_rate):
    config = _config(**{"optimizer.learning_rate": 0.1, "schedule.name": schedule})
    rate = optim.learning_rate(config, total_steps=100)
    value = (lambda step: float(rate(step))) if callable(rate) else (lambda step: rate)
    assert value(0) == pytest.approx(0.1)
    assert value(100) == pytest.approx(end_rate, abs=1e-6)


def test_warmup_rises_linearly_then_follows_the_schedule():
    config = _config(**{"optimizer.learning_rate": 0.1, "schedule.name": "cosine", "schedule.warmup_steps": 10})
    rate = optim.learning_rate(config, total_steps=110)
    assert float(rate(0)) == pytest.approx(0.01)
    assert float(rate(4)) == pytest.approx(0.05)
    assert float(rate(10)) == pytest.approx(0.1)
    assert float(rate(60)) == pytest.approx(0.05, rel=1e-3)  # half-way through the cosine
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    assert float(restored(60)) == pytest.approx(float(rate(60)))


def test_sparse_label_smoothing_equals_one_hot_smoothing():
    labels = np.array([0, 2], np.int32)
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]], np.float32)
    loss = optim.loss(_config(**{"train.label_smoothing": 0.1}))
    expected = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(np.eye(3)[labels], probs)
    assert float(loss(labels, probs)) == pytest.approx(float(expected), rel=1e-6)
    assert float(optim.loss(_config())(labels, probs)) < float(expected)
