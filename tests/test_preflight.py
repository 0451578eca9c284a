"""`nntrain preflight`: every shipped experiment passes, and each check catches the problem it is for."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
from pathlib import Path

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from corpora import EMAIL_PY

import nntrain
from nntrain import config as nn_config
from nntrain.compat import keras_layer_norm
from nntrain.errors import NntrainError
from nntrain.run import guards, preflight

REPO = Path(__file__).resolve().parent.parent
# Small enough to compile quickly. The TFDS mock holds 64 examples per split: one global batch of 64.
SMALL = {"cifar10_resnet": {"model.depth": 8, "model.width": 8}, "fashion_mnist_cnn": {"model.filters": "8,16"},
         "imdb_transformer": {"data.sequence_length": 32, "model.embed_dim": 16, "model.ff_dim": 16},
         "text_gpt": {"data.source": EMAIL_PY,
                      "data.sequence_length": 32, "model.embed_dim": 16, "model.num_layers": 1, "train.eval_steps": 2}}
TPU_CORES = {"xor": 1}  # the 4 rows of XOR do not make a batch for each of 8 cores


# images_finetune: tests/test_finetune.py preflights it at 224 x 224 with each of its backbones.
@pytest.mark.parametrize("experiment", [name for name in nn_config.experiment_names() if name != "images_finetune"])
def test_every_experiment_passes_preflight_for_tpu(experiment, tmp_path):
    config = nntrain.load_config(experiment, {"data.shuffle_buffer": 16, **SMALL.get(experiment, {})})
    mock = contextlib.nullcontext()
    if config.data.source.startswith("tfds:"):
        config.train.batch_size = 64
        mock = tfds.testing.mock_data(num_examples=64)
    with mock:
        report = nntrain.preflight(config, "tpu", tpu_cores=TPU_CORES.get(experiment, 8), model_dir=str(tmp_path))
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert report["ok"], preflight.format_report(report)
    for check in ("static shapes", "model ops", "xla compile", "precision", "eval split", "memory"):
        assert statuses[check] == "pass", preflight.format_report(report)
    assert statuses["paths"] == "warn"  # a local model_dir: fine on a TPU VM, not on a TPU Node
    assert report["precision"] == "mixed_bfloat16"
    assert report["memory"]["total_bytes"] > report["memory"]["parameter_bytes"] > 0
    assert keras.mixed_precision.global_policy().name == "float32"  # left as it was


def test_cli_fails_with_a_fix_for_each_problem(tmp_path):
    """A batch that does not split over 8 cores and a local model_dir for a TPU Node: exit 1, JSON checklist."""
    args = ["preflight", "--experiment=quadratic", "--target=tpu", "--tpu=my-tpu-node", f"--model_dir={tmp_path}",
            "--json", "--config.train.batch_size=100"]
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", *args], capture_output=True, text=True,
                            timeout=180, cwd=REPO)
    assert result.returncode == 1, result.stderr[-2000:]
    report = json.loads(result.stdout)
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["batch size"]["status"] == "fail" and checks["batch size"]["fix"] == "--config.train.batch_size=128"
    assert checks["paths"]["status"] == "fail" and "gs://" in checks["paths"]["fix"]
    assert checks["xla compile"]["status"] == "pass"  # the other checks still ran
    assert not list(tmp_path.iterdir())  # preflight writes nothing


def test_batch_and_eval_split_checks():
    assert preflight.batch_check(100, 8, "tpu").status == "fail"
    assert preflight.batch_check(32, 8, "tpu").status == "warn"  # 4 per core
    assert preflight.batch_check(32, 8, "tpu").fix == "--config.train.batch_size=64"
    assert preflight.batch_check(32, 8, "gpu").status == "pass"
    assert preflight.batch_check(1024, 8, "tpu").status == "pass"
    assert preflight.eval_batches_check(100, 128).status == "fail"
    assert "the last 80 examples are dropped" in preflight.eval_batches_check(2000, 128).detail


def test_paths_check():
    data = nn_config.base_config().data
    assert preflight.paths_check("runs/x", data, "tpu", "local", 8).status == "warn"
    assert preflight.paths_check("runs/x", data, "tpu", "my-node", 8).status == "fail"  # a TPU Node
    assert preflight.paths_check("gs://b/x", data, "tpu", "local", 32).status == "fail"  # TFDS dir is local
    data.data_dir = "gs://b/tfds"
    assert preflight.paths_check("gs://b/x", data, "tpu", "local", 32).status == "pass"
    assert preflight.paths_check("runs/x", data, "gpu", "", 1).status == "pass"


def _model(layer: keras.layers.Layer | None = None, shape: tuple = (4,), head_dtype: str = "float32") -> keras.Model:
    inputs = keras.Input(shape)
    x = layer(inputs) if layer is not None else inputs
    outputs = keras.layers.Dense(1, dtype=head_dtype)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile("sgd", "mse", jit_compile=True)
    return model


def _spec(*shape: int | None) -> tf.TensorSpec:
    return tf.TensorSpec(shape, tf.float32)


def test_shapes_check_finds_dynamic_batch_and_sequence_dims():
    ragged = tf.data.Dataset.range(5).map(lambda n: tf.ones([n + 1])).padded_batch(2)  # no drop_remainder
    labels = tf.data.Dataset.range(5).batch(2)
    sequences = keras.Input((None, 2))
    any_length = keras.Model(sequences, keras.layers.Dense(1)(keras.layers.GlobalAveragePooling1D()(sequences)))
    check = preflight.shapes_check(tf.data.Dataset.zip(ragged, labels).element_spec, any_length, "tpu")
    assert check.status == "fail"
    assert "features batch dimension is not static" in check.detail
    assert "features dimension 1 is None" in check.detail
    assert "dimension 1 is None" in check.detail.split("model input")[1]
    assert preflight.shapes_check((_spec(None, 4), _spec(None)), _model(), "tpu").status == "warn"  # TPU pads it
    assert preflight.shapes_check((_spec(2, 4), _spec(2)), _model(), "tpu").status == "pass"


def test_model_ops_check_finds_string_ops_and_py_function():
    strings = keras.layers.Lambda(lambda x: x + tf.cast(tf.strings.length(tf.strings.as_string(x)), tf.float32),
                                  output_shape=(4,), name="to_text")
    check = preflight.graph_ops_check(_model(strings), _spec(None, 4))
    assert check.status == "fail" and "AsString" in check.detail and "StringLength" in check.detail
    python = keras.layers.Lambda(lambda x: tf.ensure_shape(tf.py_function(lambda t: t * 2, [x], tf.float32), x.shape),
                                 output_shape=(4,), name="numpy_code")
    check = preflight.graph_ops_check(_model(python), _spec(None, 4))
    assert check.status == "fail" and "py_function in layer(s) numpy_code" in check.detail
    shapeless = keras.layers.Lambda(lambda x: tf.py_function(lambda t: t * 2, [x], tf.float32), output_shape=(4,))
    check = preflight.graph_ops_check(_model(shapeless), _spec(None, 4))
    assert check.status == "fail" and "cannot be traced" in check.detail
    assert preflight.graph_ops_check(_model(), _spec(None, 4)).status == "pass"


def test_xla_check_names_the_op_that_does_not_compile():
    pool = keras.layers.Lambda(lambda x: tf.nn.fractional_max_pool(x, [1, 1.5, 1.5, 1])[0], output_shape=(2, 2, 1))
    model = _model(pool, shape=(4, 4, 1))
    with pytest.raises(Exception) as error:
        model.train_on_batch(np.ones((2, 4, 4, 1), np.float32), np.ones((2, 1), np.float32))
    check = preflight.xla_failure(error.value, "tpu")
    assert check.status == "fail" and "XLA cannot compile op(s) FractionalMaxPool" in check.detail
    assert preflight.xla_failure(error.value, "gpu").status == "warn"  # a GPU runs it without XLA


def test_precision_check():
    model = _model()
    finite = {"loss": 0.5}
    assert preflight.precision_check("mixed_bfloat16", "tpu", model, finite).status == "pass"
    assert preflight.precision_check("mixed_float16", "tpu", model, finite).status == "fail"
    assert preflight.precision_check("mixed_bfloat16", "tpu", model, {"loss": float("nan")}).status == "fail"
    assert preflight.precision_check("float32", "tpu", model, finite).status == "warn"
    low_precision_head = _model(head_dtype="mixed_bfloat16")
    check = preflight.precision_check("mixed_bfloat16", "tpu", low_precision_head, finite)
    assert check.status == "warn" and "dtype='float32'" in check.fix


def test_memory_estimate_and_check():
    model = _model(keras.layers.Dense(8), shape=(4,))  # 4*8+8 + 8*1+1 = 49 parameters
    model.optimizer = keras.optimizers.Adam()  # not built yet, as before a run's first step: the estimate builds it
    memory = guards.estimate_memory(model, per_replica_batch=10)
    assert memory.parameters == 49 and memory.parameter_bytes == memory.gradient_bytes == 49 * 4
    assert memory.optimizer_bytes >= 2 * 49 * 4  # Adam: two slots per weight
    assert memory.activation_bytes == 10 * (8 + 8 + 1) * 4  # Dense(8), Flatten, Dense(1) outputs
    assert preflight.memory_check(memory, "tpu", 10).status == "pass"
    tokens = keras.Input((6, 4))  # causal self-attention, 2 heads of 3, then a GELU and a residual add (a keras.op)
    attended = keras.layers.MultiHeadAttention(2, 3)(tokens, tokens, use_causal_mask=True)
    attention = keras.Model(tokens, tokens + keras.layers.Dense(4, activation="gelu")(attended))
    attention.optimizer = keras.optimizers.Adam()
    inside = 2 * (6 + 6) * (3 + 3) + 3 * 2 * 6 * 6  # q, k, v, attended; scores, masked scores, softmax weights
    assert guards.estimate_memory(attention, 1).activation_bytes == (6 * 4 + inside + 2 * 6 * 4 + 6 * 4) * 4
    # Traced: what the gradient graph reads, i.e. the input (for the first kernel's gradient) and Dense(8)'s output
    assert guards.estimate_memory(model, 10, traced=True).activation_bytes == 10 * (4 + 8) * 4
    assert guards.traced_activation_bytes(attention, 1) >= 2 * 6 * 6 * 4  # at least the softmax weights
    # A tf.custom_gradient's backward ops (gpt's layer norm) are outside the tape's name scope: they count too. Here
    # they read 1/std per position besides the input and Dense's output (which the tape's own ops read).
    normalized = keras_layer_norm.written_out_gradient(keras.layers.LayerNormalization())
    norm = keras.Model(tokens, normalized(keras.layers.Dense(4)(tokens)))
    assert guards.traced_activation_bytes(norm, 1) >= (2 * 6 * 4 + 6) * 4
    huge = guards.Memory(10**9, 4 * 10**9, 4 * 10**9, 8 * 10**9, 2 * 10**9)  # 18 GB > 16 GiB
    assert preflight.memory_check(huge, "tpu", 10).status == "fail"
    big = guards.Memory(10**9, 2 * 10**9, 2 * 10**9, 4 * 10**9, 10**9)
    assert preflight.memory_check(big, "tpu", 10).status == "warn"


def test_text_report():
    report = {"target": "tpu", "replicas": 8, "precision": "mixed_bfloat16",
              "checks": [{"check": "batch size", "status": "fail", "detail": "d", "fix": "--config.x=1"}]}
    text = preflight.format_report(report)
    assert "[fail] batch size: d" in text and "fix: --config.x=1" in text and "1 check(s) failed" in text


def test_unknown_target_is_a_user_error():
    with pytest.raises(NntrainError, match="--target=cpu: use one of tpu, gpu"):
        preflight.run(ml_collections.ConfigDict(), target="cpu")
