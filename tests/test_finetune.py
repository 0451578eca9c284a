"""Two-phase fine-tuning of a Keras Applications backbone whose weights come from a local file: the file's
weights are loaded, the frozen phase changes no backbone weight, the unfrozen one does; the run's model.keras
loads in plain Keras and its export answers raw images of any size; imagenet weights are never downloaded."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import cli_failures
from PIL import Image

import nntrain
from nntrain.compat import keras_lr_scale
from nntrain.models import backbone
from nntrain.run import finetune, preflight
from nntrain.tuning.search_space import choice

REPO = Path(__file__).resolve().parent.parent
SIZE = 32  # MobileNetV3's smallest input
COLORS = [(200, 40, 40), (40, 200, 40), (40, 40, 200)]


def write_images(root: Path, per_class: int = 12, shape: tuple[int, int] = (40, 36)) -> Path:
    """An images: folder of noisy RGB images, a color per class (stored larger than SIZE: resized on reading)."""
    rng = np.random.default_rng(0)
    for index, color in enumerate(COLORS):
        folder = root / f"class{index}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(color, 50, (*shape, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def pretrained_weights(path: Path, images: np.ndarray) -> Path:
    """A MobileNetV3Small weights file (no top) standing in for ImageNet's: random weights (another seed than a
    run's) with each BatchNormalization's statistics set from `images`, so its features are not ~0 in inference."""
    keras.utils.set_random_seed(123)
    network = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            inputs = keras.Model(network.input, layer.input)(images).numpy()
            layer.moving_mean.assign(inputs.mean(axis=(0, 1, 2)))
            layer.moving_variance.assign(inputs.var(axis=(0, 1, 2)))
    network.save_weights(path)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("finetune")
    folder = write_images(root / "images")
    sample = np.stack([np.asarray(Image.open(p).resize((SIZE, SIZE)), np.float32) for p in
                       sorted(folder.rglob("*.png"))[::3]])
    return {"images": folder, "weights": pretrained_weights(root / "mobilenet.weights.h5", sample)}


def overrides(files: dict[str, Path], **more) -> dict:
    return {"data.source": f"images:{files['images']}", "data.image_size": f"{SIZE},{SIZE}",
            "data.train_split": "train[:75%]", "data.eval_split": "train[75%:]", "data.crop_padding": 2,
            "model.backbone_weights": str(files["weights"]), "finetune.freeze_epochs": 1, "train.epochs": 2,
            "train.batch_size": 9, "train.tensorboard": False, **more}


class Recorder(keras.callbacks.Callback):
    """The backbone's weights (BatchNormalization statistics included) before the first step and after each
    epoch."""

    def __init__(self):
        super().__init__()
        self.weights: list[list[np.ndarray]] = []

    def _record(self) -> None:
        self.weights.append([np.array(w) for w in self.model.get_layer(backbone.NAME).weights])

    def on_train_begin(self, logs=None):
        self._record()

    def on_epoch_end(self, epoch, logs=None):
        self._record()


@pytest.fixture(scope="module")
def run(files, tmp_path_factory) -> tuple[Path, Recorder]:
    model_dir = tmp_path_factory.mktemp("run") / "run"
    recorder = Recorder()
    nntrain.train(nntrain.load_config("images_finetune", overrides(files)), str(model_dir), strategy="cpu",
                  verbose=0, callbacks=[recorder])
    return model_dir, recorder


def test_the_file_is_loaded_and_the_frozen_phase_changes_no_backbone_weight(files, run):
    _, recorder = run
    start, frozen, tuned = recorder.weights
    network = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    network.load_weights(files["weights"])
    assert all(np.array_equal(a, np.asarray(b)) for a, b in zip(start, network.weights))  # before the first step
    assert all(np.array_equal(a, b) for a, b in zip(start, frozen))  # epoch 1: frozen, BN statistics too
    normalization = {id(w) for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)
                     for w in layer.weights}
    changed = [not np.array_equal(a, b) for a, b in zip(frozen, tuned)]
    # epoch 2: every backbone weight trains but BatchNormalization's (frozen, in inference mode, as the guide says)
    assert changed == [id(w) not in normalization for w in network.weights]


PLAIN_KERAS = """
import sys
import keras
import numpy as np
model = keras.saving.load_model(sys.argv[1])
print(model.predict(np.full((2, *model.input_shape[1:]), 0.5, np.float32), verbose=0).shape)
assert not any(name.startswith("nntrain") for name in sys.modules)
"""


def test_model_keras_loads_in_plain_keras_and_the_export_answers_images_of_any_size(run, tmp_path):
    model_dir, _ = run
    env = {**os.environ, "PYTHONPATH": ""}
    loaded = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(model_dir / "model.keras")], capture_output=True,
                            text=True, timeout=300, cwd=tmp_path, env=env)
    assert loaded.returncode == 0 and "(2, 3)" in loaded.stdout, loaded.stderr[-3000:]
    result = nntrain.export(str(model_dir), str(tmp_path / "export"))
    serve = tf.saved_model.load(result["saved_model"]).signatures["serve_encoded"]
    encoded = []
    for shape in ((17, 90), (300, 200)):
        buffer = io.BytesIO()
        Image.fromarray(np.full((*shape, 3), COLORS[0], np.uint8)).save(buffer, format="PNG")
        encoded.append(buffer.getvalue())
    answers = serve(image_bytes=tf.constant(encoded))
    assert answers["probabilities"].shape == (2, 3)
    np.testing.assert_allclose(answers["probabilities"].numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_imagenet_weights_missing_from_the_cache_name_the_file_and_its_url(files, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
    args = ["train", "--experiment=images_finetune", f"--model_dir={tmp_path / 'run'}", "--strategy=cpu",
            *[f"--config.{key}={value}" for key, value in overrides(files, **{"model.backbone_weights": "imagenet"})
              .items()]]
    url = "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet_v3/"
    assert not cli_failures([("imagenet offline", args, url)], tmp_path, capfd)
    assert not (tmp_path / "run").exists()


def test_a_weights_file_that_does_not_fit_is_one_line(files, tmp_path, capfd):
    keras.applications.MobileNetV3Large(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3)).save_weights(
        tmp_path / "large.weights.h5")
    cases = []
    for weights, phrase in ((tmp_path / "large.weights.h5", "does not fit MobileNetV3Small"),
                            (tmp_path / "missing.weights.h5", "no such file"), (tmp_path / "w.npz", "ending in")):
        args = ["train", "--experiment=images_finetune", f"--model_dir={tmp_path / 'run'}", "--strategy=cpu",
                *[f"--config.{key}={value}" for key, value in overrides(files, **{
                    "model.backbone_weights": str(weights)}).items()]]
        cases.append((str(weights), args, phrase))
    assert not cli_failures(cases, tmp_path, capfd)


def test_keras_still_updates_each_variable_through_update_step():
    """compat.keras_lr_scale: a scaled variable moves `factor` times as far under plain SGD."""
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2), keras.layers.Dense(1)])
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    keras_lr_scale.scale_learning_rate(optimizer, model.layers[0].trainable_variables, 0.25)
    before = [np.array(v) for v in model.trainable_variables]
    optimizer.apply([tf.ones_like(v) for v in model.trainable_variables], model.trainable_variables)
    steps = [float(np.max(np.abs(b - np.array(v)))) for b, v in zip(before, model.trainable_variables)]
    np.testing.assert_allclose(steps, [0.025, 0.025, 0.1, 0.1], rtol=1e-6)


def _cli(files: dict[str, Path], model_dir: Path, log: Path) -> subprocess.Popen:
    settings = overrides(files, **{"finetune.freeze_epochs": FREEZE, "train.epochs": EPOCHS, "train.batch_size": 4,
                                   "train.steps_per_epoch": STEPS, "train.steps_per_execution": 1,
                                   "train.checkpoint_every_steps": 2, "finetune.backbone_lr_scale": 0.5})
    args = ["train", "--experiment=images_finetune", f"--model_dir={model_dir}", "--strategy=cpu",
            *[f"--config.{key}={value}" for key, value in settings.items()]]
    with open(log, "w") as stderr:
        return subprocess.Popen([sys.executable, "-m", "nntrain.cli", *args], cwd=REPO, stdout=subprocess.DEVNULL,
                                stderr=stderr)


def _step(model_dir: Path) -> int:
    try:
        return json.loads((model_dir / "checkpoints" / "state.json").read_text())["step"]
    except (OSError, ValueError):
        return 0


FREEZE, EPOCHS, STEPS = 1, 2, 10  # steps 1-10 frozen, 11-20 fine-tuned


@pytest.mark.slow
def test_sigterm_in_the_frozen_and_in_the_unfrozen_phase_resumes_bit_identical(files, tmp_path):
    reference = _cli(files, tmp_path / "reference", tmp_path / "reference.log")
    model_dir, log = tmp_path / "run", tmp_path / "run.log"
    saved = []
    frozen, tuned = range(1, FREEZE * STEPS), range(FREEZE * STEPS + 1, EPOCHS * STEPS)
    for after, phase in ((4, frozen), (FREEZE * STEPS + 4, tuned)):
        process = _cli(files, model_dir, log)
        deadline = time.time() + 300
        while _step(model_dir) < after and process.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) == 143, log.read_text()[-3000:]
        step = int(re.findall(r"stopped by SIGTERM after step (\d+)", log.read_text())[-1])
        assert step in phase, (step, phase)
        saved.append(step)
    assert _cli(files, model_dir, log).wait(timeout=300) == 0, log.read_text()[-3000:]
    assert "fine-tuning" in log.read_text()  # the resumed run in the second phase unfroze again
    assert reference.wait(timeout=300) == 0, (tmp_path / "reference.log").read_text()[-3000:]
    resumed, uninterrupted = (keras.saving.load_model(d / "model.keras").get_weights()
                              for d in (model_dir, tmp_path / "reference"))
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(resumed, uninterrupted)) == 0.0, saved
    epochs = [json.loads(line)["epoch"] for line in (model_dir / "metrics.jsonl").read_text().splitlines()]
    assert epochs == list(range(1, EPOCHS + 1))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(backbone.BACKBONES))
def test_every_backbone_passes_preflight_for_tpu_at_224_in_bfloat16(name):
    # One image per core: the XLA compile at 224 is what is checked; a step on 8 images of 224 only costs time.
    config = nntrain.load_config("images_finetune", {
        "data.source": "synthetic", "data.input_shape": "224,224,3", "data.num_classes": 5, "data.num_examples": 64,
        "data.train_split": "train", "data.eval_split": "test", "train.batch_size": 8, "model.backbone": name,
        "model.backbone_weights": "none"})
    report = nntrain.preflight(config, "tpu", tpu_cores=8)
    statuses = {check["check"]: check["status"] for check in report["checks"]}
    assert report["ok"] and report["precision"] == "mixed_bfloat16", preflight.format_report(report)
    for check in ("static shapes", "model ops", "xla compile", "precision", "eval split", "memory"):
        assert statuses[check] == "pass", preflight.format_report(report)


def test_a_model_without_a_nested_backbone_freezes_all_but_its_head(tmp_path):
    """A cnn (e.g. one started with init_from): epoch 1 trains only its head, epoch 2 all but BatchNormalization."""
    mnist = REPO.parent / "shared" / "data" / "mnist"
    config = nntrain.load_config("fashion_mnist_cnn", {
        "data.source": f"idx:{os.environ.get('NNTRAIN_MNIST_DIR', mnist)}", "data.train_split": "test[:64]",
        "data.eval_split": "test[64:96]", "model.filters": "4,8", "model.dense_units": 8, "train.batch_size": 32,
        "train.epochs": 2, "finetune.freeze_epochs": 1, "train.tensorboard": False})
    weights = []

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            weights.append({w.path: np.array(w) for w in self.model.weights})

        def on_epoch_end(self, epoch, logs=None):
            self.on_train_begin()

    nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0, callbacks=[Record()])
    start, frozen, tuned = weights
    moved = [{path for path in start if not np.array_equal(before[path], after[path])}
             for before, after in ((start, frozen), (frozen, tuned))]
    assert moved[0] == {path for path in start if path.startswith("predictions/")}
    assert moved[1] == {path for path in start if "batch_normalization" not in path}


@pytest.mark.slow
def test_a_tuning_trial_unfreezes_after_its_frozen_epochs(files, tmp_path, monkeypatch):
    lines = []
    monkeypatch.setattr(finetune, "log", lines.append)
    space = {"finetune.unfreeze_layers": choice(10), "optimizer.learning_rate": choice(1e-3)}
    result = nntrain.tune("images_finetune", str(tmp_path / "search"), overrides(files), search_space=space,
                          strategy="cpu", max_trials=1, verbose=False)
    assert len(result["trials"]) == 1 and result["trials"][0]["status"] == "completed", result
    # MobileNetV3Small's top 10 layers hold 2 BatchNormalization layers
    assert lines == ["epoch 2: fine-tuning 8 of the backbone's 157 layers (BatchNormalization frozen) at 0.1 x the "
                     "learning rate"]
