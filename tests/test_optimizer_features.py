"""Keras 3 optimizer features from the config: gradient accumulation (exact update counts; schedules count
updates) and EMA weights (evaluation, the best checkpoint and the saved model use them)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

import nntrain
from nntrain.compat import collective_keys, keras_accumulation, keras_fused_adam, keras_lr_scale, keras_weight_decay
from nntrain.errors import NntrainError

XOR = {"train.steps_per_execution": 1, "train.epochs": 2, "optimizer.name": "sgd", "optimizer.momentum": 0.0}


class RawWeights(keras.callbacks.Callback):
    """The model's weights after every training step (before any EMA swap at the epoch's end)."""

    def __init__(self):
        super().__init__()
        self.after_step = []

    def on_train_batch_end(self, batch, logs=None):
        self.after_step.append([w.copy() for w in self.model.get_weights()])


def _metrics(model_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (model_dir / "metrics.jsonl").read_text().splitlines()]


# Loads model.keras in a process that never imports nntrain; prints what the saved optimizer holds.
LOAD_WITHOUT_NNTRAIN = """
import json, sys
import keras
optimizer = keras.saving.load_model(sys.argv[1]).optimizer
assert not any(name.split(".")[0] == "nntrain" for name in sys.modules)
print(json.dumps({"schedule": type(optimizer._learning_rate).__module__.split(".")[0],
                  "iterations": int(optimizer.iterations), "every": optimizer.gradient_accumulation_steps}))
"""


@pytest.mark.slow
def test_accumulated_steps_make_one_update_each_and_the_schedule_counts_updates(tmp_path):
    config = nntrain.load_config("xor", {**XOR, "train.steps_per_epoch": 8, "optimizer.learning_rate": 0.1,
                                         "optimizer.gradient_accumulation_steps": 4, "schedule.name": "linear"})
    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    # linear decay from 0.1 to 0 over the 4 updates: 2 done after epoch 1, 4 after epoch 2
    assert [line["learning_rate"] for line in _metrics(tmp_path / "run")] == pytest.approx([0.05, 0.0])
    # Keras built-ins only: the model loads where nntrain is not installed, 16 batches made 4 updates
    loaded = subprocess.run([sys.executable, "-c", LOAD_WITHOUT_NNTRAIN, str(tmp_path / "run" / "model.keras")],
                            cwd=tmp_path, env={**os.environ, "PYTHONPATH": "", "TF_CPP_MIN_LOG_LEVEL": "3"},
                            capture_output=True, text=True, timeout=120)
    assert loaded.returncode == 0, loaded.stderr[-2000:]
    assert json.loads(loaded.stdout.splitlines()[-1]) == {"schedule": "keras", "iterations": 4, "every": 4}


def test_keras_still_evaluates_schedules_at_training_steps():
    """What compat.keras_accumulation works around: Keras calls the schedule with the step count, 2 per update,
    and counts updates in `iterations`."""
    schedule = keras.optimizers.schedules.PolynomialDecay(1.0, decay_steps=10, end_learning_rate=0.0)
    plain, counting = (keras.optimizers.SGD(schedule, gradient_accumulation_steps=2) for _ in range(2))
    keras_accumulation.count_updates(counting)
    for optimizer in (plain, counting):
        optimizer._iterations.assign(6)  # 6 steps, 3 updates
    assert float(plain.learning_rate) == pytest.approx(0.4) and int(plain.iterations) == 3
    assert keras_accumulation.training_steps(plain) == 6
    assert float(counting.learning_rate) == pytest.approx(0.7)


def test_accumulating_two_batches_of_4_trains_like_batches_of_8(tmp_path):
    """The train stream's order does not depend on the batch size, so two accumulated batches of 4 average the
    gradients of the 8 examples one batch of 8 holds: the two runs end with the same weights."""
    common = {**XOR, "data.num_examples": 16, "train.tensorboard": False, "optimizer.learning_rate": 0.05}
    accumulated = nntrain.load_config("quadratic", {**common, "train.batch_size": 4, "train.steps_per_epoch": 8,
                                                    "optimizer.gradient_accumulation_steps": 2})
    big = nntrain.load_config("quadratic", {**common, "train.batch_size": 8, "train.steps_per_epoch": 4})
    nntrain.train(accumulated, str(tmp_path / "accumulated"), strategy="cpu", verbose=0)
    nntrain.train(big, str(tmp_path / "big"), strategy="cpu", verbose=0)
    a, b = (keras.saving.load_model(tmp_path / name / "model.keras").get_weights() for name in ("accumulated", "big"))
    for left, right in zip(a, b):
        np.testing.assert_allclose(left, right, atol=1e-5)


def test_ema_weights_are_evaluated_checkpointed_and_saved(tmp_path):
    momentum = 0.9
    config = nntrain.load_config("xor", {**XOR, "train.steps_per_epoch": 6, "optimizer.learning_rate": 0.5,
                                         "optimizer.use_ema": True, "optimizer.ema_momentum": momentum})
    raw = RawWeights()
    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0, callbacks=[raw])
    ema = raw.after_step[0]  # Keras: the average starts at the first update's weights
    averages = []
    for weights in raw.after_step[1:]:
        ema = [momentum * e + (1 - momentum) * w for e, w in zip(ema, weights)]
        averages.append(ema)
    saved = keras.saving.load_model(tmp_path / "run" / "model.keras").get_weights()
    for expected, got in zip(averages[-1], saved):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)
    assert not all(np.allclose(s, r) for s, r in zip(saved, raw.after_step[-1]))  # not the raw weights
    lines = _metrics(tmp_path / "run")
    evaluated = nntrain.evaluate(str(tmp_path / "run"))
    assert evaluated["loss"] == pytest.approx(lines[-1]["val_loss"], rel=1e-4)  # fit's validation used the EMA
    best_epoch = min(range(len(lines)), key=lambda i: lines[i]["val_loss"])
    best = keras.saving.load_model(tmp_path / "run" / "checkpoints" / "best.keras").get_weights()
    expected_best = averages[(best_epoch + 1) * 6 - 2]
    for expected, got in zip(expected_best, best):
        np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-6)


class KillInSecondEpoch(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt  # what Ctrl-C or a preemption does mid-run


def test_a_run_resumed_mid_accumulation_ends_like_an_uninterrupted_one(tmp_path):
    """6 steps per epoch, 4 per update: the epoch checkpoint falls mid-update (2 gradients accumulated)."""
    config = nntrain.load_config("xor", {**XOR, "train.steps_per_epoch": 6, "optimizer.learning_rate": 0.5,
                                         "optimizer.gradient_accumulation_steps": 4, "schedule.name": "linear"})
    nntrain.train(config, str(tmp_path / "straight"), strategy="cpu", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        nntrain.train(config, str(tmp_path / "resumed"), strategy="cpu", verbose=0, callbacks=[KillInSecondEpoch()])
    nntrain.train(config, str(tmp_path / "resumed"), strategy="cpu", verbose=0)
    rates = [[line["learning_rate"] for line in _metrics(tmp_path / name)] for name in ("straight", "resumed")]
    assert rates[0] == rates[1] == pytest.approx([0.5 * (1 - 1 / 3), 0.5 * (1 - 3 / 3)])  # 1 and 3 updates done
    straight, resumed = (keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
                         for name in ("straight", "resumed"))
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_a_resumed_ema_run_ends_like_an_uninterrupted_one(tmp_path):
    """The epoch checkpoint holds the EMA weights in the model and the raw ones in the optimizer's averages."""
    config = nntrain.load_config("xor", {**XOR, "train.steps_per_epoch": 6, "optimizer.learning_rate": 0.5,
                                         "optimizer.use_ema": True, "optimizer.ema_momentum": 0.9})
    nntrain.train(config, str(tmp_path / "straight"), strategy="cpu", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        nntrain.train(config, str(tmp_path / "resumed"), strategy="cpu", verbose=0, callbacks=[KillInSecondEpoch()])
    nntrain.train(config, str(tmp_path / "resumed"), strategy="cpu", verbose=0)
    assert len(_metrics(tmp_path / "resumed")) == 2
    straight, resumed = (keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
                         for name in ("straight", "resumed"))
    for a, b in zip(straight, resumed):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.parametrize("key, value, phrase", [
    ("optimizer.gradient_accumulation_steps", "1", "it must be >= 2, or None"),
    ("optimizer.ema_momentum", "1.5", "it must be in [0, 1)"),
])
def test_bad_optimizer_feature_values_are_one_line_errors(key, value, phrase):
    with pytest.raises(NntrainError, match=re.escape(f"config.{key}={value} is not allowed: {phrase}")):
        nntrain.load_config("xor", {key: value})


class CountingCosine(keras.optimizers.schedules.CosineDecay):
    """Keras's warmup + cosine schedule, counting the times it is evaluated (traced, in a tf.function)."""

    calls = 0

    def __call__(self, step):
        CountingCosine.calls += 1
        return super().__call__(step)


@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_weight_decay_reads_the_schedule_once_and_decays_as_keras_does(strategy):
    """compat.keras_weight_decay: AdamW with a warmup schedule evaluates it twice per update (decay, step) rather
    than once per variable plus one, and trains bit-identical to Keras's own method, also on 2 replicas; the decay
    matters here (at weight_decay=0 the weights differ)."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.normal(size=(64, 1)).astype("float32")
    mirrored = strategy == "mirrored"
    scope = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else tf.distribute.get_strategy()
    weights, calls = {}, {}
    runs = (("keras", 0.1), ("once", 0.1), ("none", 0.0))[:2 if mirrored else 3]
    for name, decay in runs:
        keras.utils.set_random_seed(1)
        with scope.scope():
            model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16), keras.layers.Dense(8),
                                      keras.layers.Dense(1)])
            schedule = CountingCosine(0.0, 100, warmup_target=0.05, warmup_steps=4)
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=decay)
            if name == "once":
                keras_weight_decay.decay_once_per_update(optimizer)
            model.compile(optimizer=optimizer, loss="mse", steps_per_execution=1)
        CountingCosine.calls = 0
        model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
        weights[name], calls[name] = model.get_weights(), CountingCosine.calls
    assert all(np.array_equal(a, b) for a, b in zip(weights["keras"], weights["once"], strict=True))
    if "none" in weights:
        assert not all(np.array_equal(a, b) for a, b in zip(weights["keras"], weights["none"], strict=True))
    # per traced update (Keras traces the step more than once, each replica its own): Keras's method evaluates it
    # once per variable (6) and once for the step; the replacement once for the decay and once for the step
    traces = calls["once"] // 2
    assert traces >= scope.num_replicas_in_sync and calls["keras"] == 7 * traces and calls["once"] == 2 * traces


@pytest.mark.fast
@pytest.mark.parametrize("strategy", ["default", "mirrored"])
def test_fused_adam_updates_as_keras_does(strategy):
    """compat.keras_fused_adam: AdamW (warmup schedule, decay, clip norm, a layer at half the rate through
    compat.keras_lr_scale) updates with one ResourceApplyAdam op per float32 variable and ends where Keras's own
    method does to float32 rounding, moments included, also on 2 replicas (to 1e-5 after 12 updates: the kernel
    forms 1 - beta_1 in float32, Keras in Python); a bfloat16 variable (on one device) and an embedding's sparse
    gradient keep Keras's method."""
    rng = np.random.default_rng(0)
    mirrored = strategy == "mirrored"
    x, y = rng.integers(0, 10, size=(64, 3)).astype("float32" if mirrored else "int32"), rng.normal(size=(64, 1))
    with collective_keys.distinct_keys():  # after the weight-decay test's strategy, in one session
        scope = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]) if mirrored else tf.distribute.get_strategy()
    states, ops = {}, {}
    for fused in (False, True):
        keras.utils.set_random_seed(1)
        with scope.scope():
            # on 2 replicas float32 Dense layers only: Keras's all-reduce takes neither a bfloat16 gradient with
            # float32 ones nor, reliably, an embedding's sparse one (the gathered shapes differ per replica)
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(8), keras.layers.Dense(1)] if mirrored else
                                     [keras.Input((3,), dtype="int32"), keras.layers.Embedding(10, 4),
                                      keras.layers.Flatten(), keras.layers.Dense(8),
                                      keras.layers.Dense(1, dtype="bfloat16")])
            schedule = keras.optimizers.schedules.CosineDecay(0.0, 100, warmup_target=0.05, warmup_steps=4)
            optimizer = keras.optimizers.AdamW(schedule, weight_decay=0.1, clipnorm=1.0)
            if fused:
                keras_fused_adam.fused_update(optimizer)
            model.compile(optimizer=optimizer, loss="mse", steps_per_execution=1)
            optimizer.build(model.trainable_variables)
            keras_lr_scale.scale_learning_rate(optimizer, model.layers[-2].trainable_variables, 0.5)  # wraps it
        initial = model.get_weights()
        model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
        states[fused] = [np.asarray(v, "float32") for v in [*model.weights, *optimizer.variables]]
        if mirrored:
            continue
        apply = tf.function(lambda grads, model=model: model.optimizer.apply(grads, model.trainable_variables))
        graph = apply.get_concrete_function([tf.zeros_like(v) for v in model.trainable_variables]).graph
        ops[fused] = [op.type for op in graph.get_operations()]
    for keras_value, fused_value in zip(states[False], states[True], strict=True):
        np.testing.assert_allclose(fused_value, keras_value, rtol=1e-4, atol=1e-5)
    assert all(not np.array_equal(a, b) for a, b in zip(initial[:3], states[True]))  # float32 weights trained
    if mirrored:
        return
    # dense gradients given: the three float32 variables fused, the bfloat16 Dense's two by Keras's ops
    assert ops[False].count("ResourceApplyAdam") == 0 and ops[True].count("ResourceApplyAdam") == 3
    assert len(ops[True]) <= len(ops[False]) - 3 * 15  # Keras: ~28 ops per variable updated
