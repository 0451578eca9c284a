"""Exports a client can use without nntrain: the serving SavedModel on raw inputs, TFLite (quantized or not)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow_datasets as tfds

import nntrain
from nntrain.errors import NntrainError

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
MNIST_8K_2K = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:8000]",
               "data.eval_split": "test[8000:]", "train.epochs": 3, "train.tensorboard": False}

# A client: TensorFlow and numpy only. Reads the raw uint8 MNIST test images 8000.. from the IDX file and
# prints the serving SavedModel's accuracy on them; the same images encoded as PNG get the same classes.
CLIENT = """
import gzip, json, sys
import numpy as np
import tensorflow as tf
saved_model, mnist = sys.argv[1], sys.argv[2]
with gzip.open(mnist + "/t10k-images-idx3-ubyte.gz") as f:
    images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[8000:]
with gzip.open(mnist + "/t10k-labels-idx1-ubyte.gz") as f:
    labels = np.frombuffer(f.read(), np.uint8, offset=8)[8000:]
serve = tf.saved_model.load(saved_model).signatures["serving_default"]
answers = serve(features=tf.constant(images))
assert answers["probabilities"].shape == (2000, 10) and answers["class_index"].dtype == tf.int64
encoded = tf.saved_model.load(saved_model).signatures["serve_encoded"]  # the same images as PNG files
from_png = encoded(image_bytes=tf.map_fn(tf.io.encode_png, tf.constant(images), fn_output_signature=tf.string))
assert (from_png["class_index"].numpy() == answers["class_index"].numpy()).all()
assert not any(name.startswith("nntrain") for name in sys.modules)
print(json.dumps({"accuracy": float(np.mean(answers["class_index"].numpy() == labels))}))
"""


@pytest.fixture(scope="module")
def mnist_run(tmp_path_factory) -> str:
    """mnist_mlp trained for 3 epochs on real MNIST test[:8000]."""
    model_dir = str(tmp_path_factory.mktemp("mnist") / "run")
    nntrain.train(nntrain.load_config("mnist_mlp", MNIST_8K_2K), model_dir, strategy="cpu", verbose=0)
    return model_dir


@pytest.mark.slow
def test_serving_saved_model_takes_raw_uint8_images_and_matches_evaluate(mnist_run, tmp_path):
    evaluated = nntrain.evaluate(mnist_run)
    exported = nntrain.export(mnist_run, str(tmp_path / "export"))
    assert sorted(os.listdir(tmp_path / "export")) == ["dataset.json", "model.keras", "saved_model"]
    served = subprocess.run([sys.executable, "-c", CLIENT, exported["saved_model"], str(MNIST_DIR)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path, env={**os.environ,
                                                                                            "PYTHONPATH": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    accuracy = json.loads(served.stdout.splitlines()[-1])["accuracy"]
    assert evaluated["accuracy"] > 0.9
    assert abs(accuracy - evaluated["accuracy"]) <= 1e-6
    rows = {row["artifact"]: row for row in exported["artifacts"]}
    assert abs(rows["saved_model"]["accuracy"] - accuracy) <= 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("quantize, points", [("none", 0.5), ("int8", 1.0)])
def test_tflite_export_scores_close_to_the_keras_model(mnist_run, tmp_path, quantize, points):
    exported = nntrain.export(mnist_run, str(tmp_path / "export"), export_format="tflite", quantize=quantize)
    rows = {row["artifact"]: row for row in exported["artifacts"]}
    keras_accuracy, tflite = rows["model.keras"]["accuracy"], rows["model.tflite"]
    assert tflite["quantize"] == quantize and tflite["bytes"] == os.path.getsize(exported["tflite"])
    assert abs(tflite["accuracy"] - keras_accuracy) * 100 <= points, (tflite, keras_accuracy)
    if quantize == "int8":  # int8 weights: about a quarter of the float file
        assert tflite["bytes"] < rows["saved_model"]["bytes"] / 3


@pytest.mark.slow
def test_a_failed_export_leaves_nothing_behind(mnist_run, tmp_path, monkeypatch):
    """A failure after files were written (here: the TFLite conversion) removes them and the directories made."""
    from nntrain.exports import tflite as tflite_export

    def fail(*args):
        raise NntrainError("TFLite could not convert the model")

    monkeypatch.setattr(tflite_export, "convert", fail)
    with pytest.raises(NntrainError, match="could not convert"):
        nntrain.export(mnist_run, str(tmp_path / "new" / "dirs" / "export"), export_format="tflite")
    assert os.listdir(tmp_path) == []


TEXT_CLIENT = """
import sys
import tensorflow as tf
serve = tf.saved_model.load(sys.argv[1]).signatures["serving_default"]
answers = serve(features=tf.constant(["a wonderful film, I loved it", "dull and far too long"]))
assert answers["probabilities"].shape == (2, 2)
print(sorted(answers), [name.decode() for name in answers["class_name"].numpy()])
"""


@pytest.mark.slow
def test_text_export_takes_raw_strings_and_int8_is_refused(tmp_path):
    """imdb_transformer (mock data): the vocabulary is inside the SavedModel; TFLite (string ops) is one clear error."""
    model_dir, export_dir = str(tmp_path / "run"), tmp_path / "export"
    config = nntrain.load_config("imdb_transformer", {"train.epochs": 1, "train.steps_per_epoch": 2,
                                                      "train.batch_size": 8, "data.sequence_length": 16,
                                                      "data.vocab_size": 500, "train.tensorboard": False})
    with tfds.testing.mock_data(num_examples=32):
        nntrain.train(config, model_dir, strategy="cpu", verbose=0)
        with pytest.raises(NntrainError, match="--format=tflite needs a model on numeric inputs.*raw text.*int8"):
            nntrain.export(model_dir, str(tmp_path / "new" / "export"), export_format="tflite", quantize="int8")
        assert not export_dir.exists() and sorted(os.listdir(tmp_path)) == ["run"]  # nothing half-written
        exported = nntrain.export(model_dir, str(export_dir))
    served = subprocess.run([sys.executable, "-c", TEXT_CLIENT, exported["saved_model"]], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env={**os.environ, "PYTHONPATH": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    assert "['class_index', 'class_name', 'probabilities']" in served.stdout
    assert all(name in ("neg", "pos") for name in eval(served.stdout.split("] ", 1)[1]))


@pytest.mark.fast
def test_bad_export_format_is_one_line_and_writes_nothing(tmp_path):
    export_dir = tmp_path / "export"
    result = subprocess.run([sys.executable, "-m", "nntrain.cli", "export", f"--model_dir={tmp_path / 'none'}",
                             f"--export_dir={export_dir}", "--format=onnx"], capture_output=True, text=True,
                            timeout=120, cwd=REPO)
    assert result.returncode != 0
    assert result.stderr.strip() == "nntrain: error: unknown export format 'onnx': use one of saved_model, tflite"
    assert sorted(os.listdir(tmp_path)) == []


@pytest.mark.parametrize("options, message", [
    ({"export_format": "tflite", "quantize": "int4"},
     "unknown quantization 'int4': use one of none, dynamic, float16, int8"),
    ({"quantize": "int8"}, "--quantize=int8 applies to TFLite exports: add --format=tflite"),
])
def test_bad_quantization_is_refused_before_anything_is_read(tmp_path, options, message):
    with pytest.raises(NntrainError) as error:
        nntrain.export(str(tmp_path / "none"), str(tmp_path / "export"), **options)
    assert str(error.value) == message
    assert sorted(os.listdir(tmp_path)) == []


def test_int8_of_an_op_tflite_cannot_quantize_is_one_clear_error(tmp_path):
    """The converter's own failure (a matrix determinant: no TFLite kernel) becomes one NntrainError line."""
    import tensorflow as tf

    from nntrain.data import raw as raw_data
    from nntrain.exports import tflite as tflite_export

    module = tf.Module()
    module.serve = tf.function(lambda features: {"outputs": tf.linalg.det(features)},
                               input_signature=[tf.TensorSpec((None, 2, 2), tf.float32)])
    tf.saved_model.save(module, str(tmp_path / "sm"), signatures={"serving_default": module.serve})
    examples = tf.data.Dataset.from_tensor_slices((np.ones((8, 2, 2), np.float32), np.zeros(8, np.float32)))
    raw = raw_data.RawData(examples, examples, 8, None, None)
    with pytest.raises(NntrainError) as error:
        tflite_export.convert(str(tmp_path / "sm"), "int8", raw)
    message = str(error.value)
    assert message.startswith("TFLite could not convert the model with --quantize=int8: ")
    assert "\n" not in message and message.endswith("try another --quantize, or serve saved_model/")


# A client holding image files: TensorFlow only. Sends the files' bytes to serve_encoded; prints the answers.
ENCODED_CLIENT = """
import json, sys
import tensorflow as tf
saved_model, paths = sys.argv[1], json.loads(sys.argv[2])
serve = tf.saved_model.load(saved_model).signatures["serve_encoded"]
answers = serve(image_bytes=tf.constant([open(path, "rb").read() for path in paths]))
assert not any(name.startswith("nntrain") for name in sys.modules)
print(json.dumps({key: answers[key].numpy().tolist() for key in ("class_index", "probabilities")}))
"""


def _mnist_test_images(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
    import gzip

    with gzip.open(MNIST_DIR / "t10k-images-idx3-ubyte.gz") as f:
        images = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)
    with gzip.open(MNIST_DIR / "t10k-labels-idx1-ubyte.gz") as f:
        labels = np.frombuffer(f.read(), np.uint8, offset=8)
    return images[start:stop], labels[start:stop]


def _write_pngs(root: Path, images: np.ndarray, labels: np.ndarray, sizes: list[tuple[int, int]]) -> None:
    """One PNG per image in root/LABEL/, the i-th resized (bilinear) to sizes[i % len(sizes)]."""
    import tensorflow as tf

    for i, (image, label) in enumerate(zip(images, labels)):
        size = sizes[i % len(sizes)]
        if size != image.shape[:2]:
            image = tf.cast(tf.round(tf.image.resize(image, size)), tf.uint8)
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        (root / str(label) / f"{i}.png").write_bytes(tf.io.encode_png(image).numpy())


@pytest.mark.slow
def test_serve_encoded_takes_image_files_of_any_size_and_answers_as_evaluate(tmp_path):
    """images:DIR of real MNIST PNGs (eval files at 28x28, 40x36 and 20x20); the SavedModel's serve_encoded,
    given the files' bytes in a process without nntrain, answers exactly as nntrain's tf.data eval path."""
    from nntrain.data import images as image_folders

    folder = tmp_path / "pngs"
    _write_pngs(folder / "train", *_mnist_test_images(0, 1000), [(28, 28)])
    _write_pngs(folder / "test", *_mnist_test_images(8000, 8150), [(28, 28), (40, 36), (20, 20)])
    model_dir = str(tmp_path / "run")
    config = nntrain.load_config("mnist_mlp", {"data.source": f"images:{folder}", "data.train_split": "train",
                                               "data.eval_split": "test", "train.epochs": 3,
                                               "train.tensorboard": False})
    config.data.image_size, config.data.channels = (28, 28), 1
    nntrain.train(config, model_dir, strategy="cpu", verbose=0)
    exported = nntrain.export(model_dir, str(tmp_path / "export"))
    evaluated, expected = nntrain.evaluate(model_dir), nntrain.predict(model_dir, limit=150)

    paths, labels = image_folders.list_folder(str(folder)).files["test"]  # the eval split's order
    served = subprocess.run([sys.executable, "-c", ENCODED_CLIENT, exported["saved_model"], json.dumps(paths)],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": ""})
    assert served.returncode == 0, served.stderr[-3000:]
    answers = json.loads(served.stdout.splitlines()[-1])
    assert answers["class_index"] == expected.predicted.tolist()
    np.testing.assert_allclose(answers["probabilities"], expected.outputs, atol=1e-5)  # batch sizes differ
    accuracy = float(np.mean(np.array(answers["class_index"]) == labels))
    assert evaluated["accuracy"] > 0.8 and abs(accuracy - evaluated["accuracy"]) <= 1e-6

    shown = subprocess.run([str(Path(sys.executable).parent / "saved_model_cli"), "show", "--dir",
                            exported["saved_model"], "--tag_set", "serve", "--signature_def", "serve_encoded"],
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr[-3000:]
    assert "inputs['image_bytes'] tensor_info:" in shown.stdout and "dtype: DT_STRING" in shown.stdout
    assert "outputs['class_index']" in shown.stdout


@pytest.mark.fast
def test_a_bf16_models_float32_copy_for_tflite_has_its_weights_and_float32_ops():
    """precision=auto trains in mixed_bfloat16 on CPUs with AVX512_BF16; TFLite's int8 quantizer cannot translate a
    bf16 MatMul, so `export --format=tflite` converts a float32 copy: same weights, float32 compute, close outputs."""
    from nntrain.exports.artifacts import float32_copy

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, dtype="float32")(hidden))
    keras.mixed_precision.set_global_policy("float32")
    copy = float32_copy(model)
    assert {layer.dtype_policy.name for layer in model._flatten_layers()} >= {"mixed_bfloat16"}
    assert {layer.dtype_policy.name for layer in copy._flatten_layers()} == {"float32"}
    for mine, theirs in zip(model.get_weights(), copy.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    x = np.random.default_rng(0).normal(size=(5, 6)).astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), model.predict(x, verbose=0), atol=0.05)
    assert float32_copy(copy) is copy  # a float32 model is used as it is
