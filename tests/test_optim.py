"""Optimizers, schedules (with warmup), clipping and losses from the config."""

from __future__ import annotations

import keras
import pytest

import nntrain
from nntrain.errors import NntrainError
from nntrain.run import optim

pytestmark = pytest.mark.fast


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
    assert type(rate) is keras.optimizers.schedules.CosineDecay  # a built-in: loads without nntrain
    assert float(rate(0)) == pytest.approx(0.0)
    assert float(rate(5)) == pytest.approx(0.05)
    assert float(rate(10)) == pytest.approx(0.1)
    assert float(rate(60)) == pytest.approx(0.05, rel=1e-3)  # half-way through the cosine
    assert float(rate(110)) == pytest.approx(0.0, abs=1e-6)


def test_constant_rate_after_warmup():
    config = _config(**{"optimizer.learning_rate": 0.1, "schedule.name": "constant", "schedule.warmup_steps": 10})
    rate = optim.learning_rate(config, total_steps=110)
    assert float(rate(5)) == pytest.approx(0.05)
    assert float(rate(10)) == pytest.approx(0.1) and float(rate(100)) == pytest.approx(0.1)


def test_warmup_with_a_schedule_keras_cannot_warm_up_is_an_error():
    with pytest.raises(NntrainError, match="schedule.warmup_steps=5 .*cosine or constant"):
        _config(**{"schedule.name": "linear", "schedule.warmup_steps": 5})


def test_label_smoothing_uses_keras_categorical_crossentropy_on_one_hot_labels():
    loss = optim.loss(_config(**{"train.label_smoothing": 0.1, "data.one_hot_labels": True}))
    assert type(loss) is keras.losses.CategoricalCrossentropy and loss.get_config()["label_smoothing"] == 0.1
    with pytest.raises(NntrainError, match="label_smoothing=0.1 .*data.one_hot_labels=true"):
        _config(**{"train.label_smoothing": 0.1})
    with pytest.raises(NntrainError, match="data.one_hot_labels=True .*classification"):
        nntrain.load_config("xor", {"data.one_hot_labels": True})
