"""The gpt builder: causal masking, tied embeddings, plain-Keras loading; bits per byte; the text_gpt experiment."""

import dataclasses
import json
import math
import os
import signal
import subprocess
import sys

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
from corpora import TINY_GPT

import nntrain
from nntrain import models
from nntrain.compat import keras_causal_attention, keras_layer_norm
from nntrain.data.spec import DatasetSpec
from nntrain.errors import NntrainError
from nntrain.run import bits_per_byte
from nntrain.run.preemption import Preempted
from nntrain.run.runstate import RunState

LENGTH, VOCAB = 12, 257
SPEC = DatasetSpec(input_shape=(LENGTH,), input_dtype="int32", num_classes=VOCAB, train_examples=1, vocab_size=VOCAB)


def gpt_config(**changes):
    config = ml_collections.ConfigDict({"name": "gpt", "embed_dim": 16, "num_heads": 2, "num_layers": 2,
                                        "ff_multiplier": 2, "dropout": 0.0, "tie_embeddings": True,
                                        "positions": "learned"})
    config.update(changes)
    return config


@pytest.mark.parametrize("tie,positions", [(True, "learned"), (False, "learned"), (True, "rotary")])
def test_a_change_at_position_t_changes_no_output_before_t(tie, positions):
    keras.utils.set_random_seed(0)
    model = models.build(gpt_config(tie_embeddings=tie, positions=positions), SPEC)
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(1, LENGTH), dtype=np.int32)
    changed = tokens.copy()
    t = 5
    changed[0, t] = (tokens[0, t] + 1) % VOCAB
    before, after = model.predict(tokens, verbose=0), model.predict(changed, verbose=0)
    assert before.shape == (1, LENGTH, VOCAB)
    np.testing.assert_allclose(before.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(before[0, :t], after[0, :t])
    assert np.abs(before[0, t:] - after[0, t:]).max() > 1e-6  # it does see position t from t on


def test_tied_embeddings_share_the_token_table():
    tied = models.build(gpt_config(), SPEC)
    untied = models.build(gpt_config(tie_embeddings=False), SPEC)
    assert untied.count_params() - tied.count_params() == 16 * VOCAB + VOCAB  # the output Dense's kernel + bias


@pytest.mark.fast
def test_positions_are_looked_up_once_and_broadcast_over_the_batch():
    """The position embedding is one row of positions for the whole batch: its gradient has `length` rows, not
    batch x length to scatter-add."""
    model = models.build(gpt_config(), SPEC)
    table = model.get_layer("position_embedding").embeddings
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(8, LENGTH))
    with tf.GradientTape() as tape:
        loss = keras.ops.mean(keras.ops.log(model(tokens)[:, :, 1]))
    gradient = tape.gradient(loss, table)
    assert model.get_layer("position_embedding").output.shape == (1, LENGTH, 16)
    assert gradient.values.shape[0] == LENGTH and np.count_nonzero(tf.convert_to_tensor(gradient)) == LENGTH * 16


@pytest.mark.fast
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_layer_norm_with_its_gradient_written_out_is_keras_s(policy):
    """compat.keras_layer_norm: the same outputs and gradients (input, gamma, beta) as Keras's LayerNormalization,
    to float32 rounding (to a bfloat16 step under mixed_bfloat16)."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        layers = [keras.layers.LayerNormalization() for _ in range(2)]
        keras_layer_norm.written_out_gradient(layers[1])
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(1.0, 3.0, size=(4, 6, 16)), layers[0].compute_dtype)
        dy = tf.constant(rng.normal(size=(4, 6, 16)), layers[0].compute_dtype)
        results = []
        for layer in layers:
            layer.build(x.shape)
            layer.gamma.assign(rng.uniform(0.5, 1.5, 16) if not results else layers[0].gamma)
            layer.beta.assign(rng.normal(size=16) if not results else layers[0].beta)
            with tf.GradientTape() as tape:
                tape.watch(x)
                y = layer(x)
            results.append([y, *tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy)])
        assert results[1][0].dtype == results[0][0].dtype
        tolerance = 1e-5 if policy == "float32" else 1e-2
        for ours, theirs in zip(results[1], results[0], strict=True):
            np.testing.assert_allclose(np.asarray(ours, "float32"), np.asarray(theirs, "float32"),
                                       rtol=tolerance, atol=tolerance)
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.fast
@pytest.mark.parametrize("policy", ["float32", "mixed_bfloat16"])
def test_causal_attention_written_out_is_keras_s(policy):
    """compat.keras_causal_attention: the same outputs and gradients (input, every projection's kernel and bias)
    as Keras's MultiHeadAttention with its causal mask, to float32 rounding (to bfloat16 rounding under
    mixed_bfloat16), through BatchMatMulV2 rather than Keras's Einsum; other calls keep Keras's method."""
    keras.mixed_precision.set_global_policy(policy)
    try:
        layers = [keras.layers.MultiHeadAttention(2, key_dim=8) for _ in range(2)]
        keras_causal_attention.written_out(layers[1])
        rng = np.random.default_rng(0)
        x = tf.constant(rng.normal(0.0, 2.0, size=(3, 10, 16)), layers[0].compute_dtype)
        dy = tf.constant(rng.normal(size=(3, 10, 16)), layers[0].compute_dtype)
        results, graphs = [], []
        for layer in layers:
            layer(x, x, use_causal_mask=True)
            layer.set_weights(layers[0].get_weights())

            @tf.function
            def forward_and_backward(x, layer=layer):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y = layer(x, x, use_causal_mask=True)
                return [y, *tape.gradient(y, [x, *layer.trainable_variables], output_gradients=dy)]

            results.append(forward_and_backward(x))
            graphs.append({op.type for op in forward_and_backward.get_concrete_function(x).graph.get_operations()})
        assert "Einsum" in graphs[0] and "Einsum" not in graphs[1]  # the written-out path ran, not Keras's
        tolerance = 1e-5 if policy == "float32" else 1e-2
        for ours, theirs in zip(results[1], results[0], strict=True):
            assert ours.dtype == theirs.dtype
            theirs = np.asarray(theirs, "float32")
            np.testing.assert_allclose(np.asarray(ours, "float32"), theirs, rtol=0,
                                       atol=tolerance * max(np.abs(theirs).max(), 1.0))
        unmasked = [np.asarray(layer(x, x), "float32") for layer in layers]  # no causal mask: Keras's method
        np.testing.assert_array_equal(unmasked[1], unmasked[0])
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.fast
def test_bits_per_byte_is_nats_over_ln2_per_byte():
    assert bits_per_byte.from_nats(math.log(256)) == pytest.approx(8.0)  # uniform over bytes: 8 bits each
    logs = {"loss": math.log(2), "val_loss": 2 * math.log(2)}
    callback = bits_per_byte.BitsPerByte(ml_collections.ConfigDict({"source": "text:*.txt"}))
    callback.on_epoch_end(0, logs)
    assert logs["bits_per_byte"] == pytest.approx(1.0) and logs["val_bits_per_byte"] == pytest.approx(2.0)
    assert bits_per_byte.add({"loss": 1.0}, ml_collections.ConfigDict({"source": "tfds:mnist"})) == {"loss": 1.0}


@pytest.mark.slow
def test_runlocal_trains_and_model_keras_loads_without_nntrain(tmp_path):
    # No warmup: nntrain's own Warmup schedule is not a Keras built-in (issue 12 replaces it with CosineDecay's).
    config = nntrain.load_config("text_gpt", {**TINY_GPT, "schedule.warmup_steps": 0})
    metrics = nntrain.train(config, str(tmp_path), strategy="cpu", verbose=0)
    assert metrics["epoch"] == 2
    assert metrics["val_bits_per_byte"] == pytest.approx(metrics["val_loss"] / math.log(2))
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("bits_per_byte" in line and "val_bits_per_byte" in line for line in lines)
    evaluation = nntrain.evaluate(str(tmp_path))
    assert evaluation["bits_per_byte"] == pytest.approx(evaluation["loss"] / math.log(2))
    tokens = np.frombuffer(b"import os\n" * 4, np.uint8)[:32].astype(np.int32)[None]
    rotary = models.build(gpt_config(positions="rotary"), dataclasses.replace(SPEC, input_shape=(32,)))
    rotary.save(tmp_path / "rotary.keras")
    expected = {name: keras.saving.load_model(tmp_path / f"{name}.keras").predict(tokens, verbose=0)
                for name in ("model", "rotary")}
    np.save(tmp_path / "tokens.npy", tokens)
    script = ("import sys, keras, numpy as np\n"
              "for name in ('model', 'rotary'):\n"
              "    m = keras.saving.load_model(f'{sys.argv[1]}/{name}.keras')\n"
              "    np.save(f'{sys.argv[1]}/{name}.npy', m.predict(np.load(sys.argv[1] + '/tokens.npy'), verbose=0))\n"
              "assert not any(name.startswith('nntrain') for name in sys.modules)")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120, cwd="/")
    for name, outputs in expected.items():
        np.testing.assert_allclose(np.load(tmp_path / f"{name}.npy"), outputs, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("target,positions", [("tpu", "learned"), ("gpu", "learned"), ("tpu", "rotary")])
def test_preflight_passes_in_bfloat16_and_float16_with_xla(target, positions):
    config = nntrain.load_config("text_gpt", {**TINY_GPT, "train.batch_size": 64,
                                              "model.positions": positions})
    report = nntrain.preflight(config, target, tpu_cores=8, gpus=1)
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert report["ok"] and report["precision"] == {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}[target]
    for check in ("static shapes", "model ops", "xla compile", "precision"):
        assert statuses[check] == "pass", report


def test_float16_gets_loss_scaling_and_float32_outputs():
    import tensorflow as tf

    from nntrain.run import trainer

    config = nntrain.load_config("text_gpt", {**TINY_GPT, "train.precision": "mixed_float16"})
    model, run = trainer.build_model(config, SPEC, 4, tf.distribute.get_strategy())
    assert run.jit_compile is True  # float16 on CPU only runs at speed under XLA
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert model.get_layer("token_embedding").compute_dtype == "float16" and model.output.dtype == "float32"


def test_the_end_of_training_line_compares_with_the_unigram_entropy(tmp_path, monkeypatch, data_config):
    (tmp_path / "a.txt").write_bytes(b"abab")  # 1 bit per byte
    data_config.source, data_config.train_split = f"text:{tmp_path}/*.txt", "train"
    lines = []
    monkeypatch.setattr(bits_per_byte, "log", lines.append)
    callback = bits_per_byte.BitsPerByte(data_config)
    callback.on_epoch_end(0, {"loss": 1.0, "val_loss": 0.5 * math.log(2)})
    callback.on_train_end()
    assert lines == ["val_bits_per_byte 0.5000 = 0.500 x the unigram entropy of the training bytes "
                     "(1.0000 bits/byte)"]


@pytest.mark.slow
def test_bench_reports_tokens_per_second():
    from nntrain.benchmark import format_table

    result = nntrain.bench(nntrain.load_config("text_gpt", TINY_GPT), strategy="cpu", steps=8)
    assert result["tokens_per_second"] == pytest.approx(result["examples_per_second"] * 32)
    assert f"({result['tokens_per_second']:,.0f} tokens/s)" in format_table(result)


class _SignalAtBatch(keras.callbacks.Callback):
    """Sends this process SIGTERM after batch `batch` of the first epoch, as a scheduler would mid-epoch."""

    def __init__(self, batch: int):
        super().__init__()
        self.batch, self.sent = batch, False

    def on_train_batch_end(self, batch, logs=None):
        if batch == self.batch and not self.sent:
            self.sent = True
            os.kill(os.getpid(), signal.SIGTERM)


@pytest.mark.slow
def test_runlocal_stopped_mid_epoch_resumes_to_the_same_weights(tmp_path, monkeypatch):
    """Packed text stream, dropout, Adam: stopped mid-epoch by SIGTERM and resumed, it ends bit-identical; the
    stopped run reports the unigram entropy too. The stopped run's config.json is made as runs saved before
    model.ff_activation and model.fused_qkv wrote it (no such keys): it resumes as the GELU model with separate
    query/key/value projections it was, from that file or from a config that says so, and text_gpt's config (relu)
    is refused naming the key."""
    old_model = {"model.dropout": 0.1, "model.ff_activation": "gelu", "model.fused_qkv": False}
    config = nntrain.load_config("text_gpt", {**TINY_GPT, "train.steps_per_execution": 1, **old_model})
    nntrain.train(config, str(tmp_path / "straight"), strategy="cpu", verbose=0)
    with pytest.raises(Preempted, match=r"after step [1-3], "):  # mid-epoch: 4 steps per epoch
        lines = []
        monkeypatch.setattr(bits_per_byte, "log", lines.append)
        nntrain.train(config, str(tmp_path / "stopped"), strategy="cpu", verbose=0, callbacks=[_SignalAtBatch(1)])
    assert [line for line in lines if "unigram entropy of the training bytes: 4." in line]  # no val bits yet
    saved = tmp_path / "stopped" / "config.json"
    old_style = json.loads(saved.read_text())
    del old_style["model"]["ff_activation"], old_style["model"]["fused_qkv"]
    saved.write_text(json.dumps(old_style))
    now = nntrain.load_config("text_gpt", {**TINY_GPT, "train.steps_per_execution": 1, "model.dropout": 0.1})
    with pytest.raises(NntrainError, match=r"model.ff_activation='gelu' \(now 'relu'\)\)"):
        nntrain.train(now, str(tmp_path / "stopped"), strategy="cpu", verbose=0)
    RunState.load(str(tmp_path / "stopped")).check_same_model(config)  # gelu said: the same model
    nntrain.train(nntrain.load_config(str(saved)), str(tmp_path / "stopped"), strategy="cpu", verbose=0)
    straight, resumed = (keras.saving.load_model(tmp_path / name / "model.keras").get_weights()
                         for name in ("straight", "stopped"))
    for a, b in zip(straight, resumed, strict=True):
        np.testing.assert_array_equal(a, b)
