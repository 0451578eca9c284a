"""model.init_from: a run starts from another run's layers (name and shape), and transfer is real: a CNN trained
on MNIST digits 0-4 and fine-tuned on 20 images per class of digits 5-9 beats the same CNN from scratch."""

from __future__ import annotations

import json
import os
from pathlib import Path

import keras
import ml_collections
import numpy as np
import pytest
from conftest import cli_failures
from PIL import Image

import nntrain
from nntrain import models
from nntrain.config import base_config
from nntrain.data import idx
from nntrain.data.spec import DatasetSpec
from nntrain.run import init_from

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
# fashion_mnist_cnn's CNN (two conv blocks with batch norm, dense 128, dropout 0.3), Adam 1e-3 constant
QUIET = {"schedule.name": "constant", "train.tensorboard": False, "data.shuffle_buffer": 1000,
         "train.monitor": "val_accuracy"}


def write_digits(root: Path, digits: range, per_class: dict[str, int]) -> Path:
    """An images: folder root/SPLIT/DIGIT/*.png of MNIST test images of `digits`: per split, the next
    `per_class[split]` images of each digit (so splits never share an image)."""
    images, labels = idx.load(str(MNIST_DIR))["test"]
    for digit in digits:
        of_digit = images[labels == digit]
        start = 0
        for split, count in per_class.items():
            folder = root / split / str(digit)
            folder.mkdir(parents=True)
            for i, image in enumerate(of_digit[start:start + count]):
                Image.fromarray(image.reshape(28, 28)).save(folder / f"{i}.png")
            start += count
    return root


def config(source: Path, epochs: int, **overrides):
    return nntrain.load_config("fashion_mnist_cnn", {"data.source": f"images:{source}", "data.train_split": "train",
                                             "data.eval_split": "test", "train.epochs": epochs,
                                             "train.batch_size": 20, **QUIET, **overrides})


@pytest.mark.slow
def test_a_cnn_fine_tuned_from_digits_0_to_4_beats_one_from_scratch_on_20_images_of_5_to_9(tmp_path):
    first = write_digits(tmp_path / "0-4", range(0, 5), {"train": 600, "test": 100})
    few = write_digits(tmp_path / "5-9", range(5, 10), {"train": 20, "test": 150})
    nntrain.train(config(first, 3), str(tmp_path / "pretrained"), strategy="cpu", verbose=0)
    budget = 5  # epochs of 5 steps over the 100 images, for both (docs/finetune.md has the curves)
    scratch = nntrain.train(config(few, budget), str(tmp_path / "scratch"), strategy="cpu", verbose=0)
    tuned = nntrain.train(config(few, budget, **{"model.init_from": str(tmp_path / "pretrained")}),
                          str(tmp_path / "tuned"), strategy="cpu", verbose=0)
    print(f"held-out accuracy on 750 images of 5-9: scratch {scratch['val_accuracy']:.4f}, "
          f"init_from {tuned['val_accuracy']:.4f}")
    assert tuned["val_accuracy"] >= scratch["val_accuracy"] + 0.10


MLP = {"name": "mlp", "hidden_sizes": (8, 4), "activation": "relu", "dropout": 0.0, "l1": 0.0, "l2": 0.0,
       "batch_norm": True}


def mlp(num_classes: int, input_shape: tuple[int, ...] = (28, 28, 1)) -> keras.Model:
    spec = DatasetSpec(input_shape=input_shape, input_dtype="float32", num_classes=num_classes, train_examples=8)
    return models.build(ml_collections.ConfigDict({**base_config().model.to_dict(), **MLP}), spec)


def test_matching_layers_load_and_a_head_for_other_classes_is_new(tmp_path):
    source = mlp(10)
    source.save(tmp_path / "ten.keras")
    target = mlp(3)  # built later in this process: Keras numbers its layers dense_3.. (matched by place)
    loaded = init_from.apply(target, str(tmp_path / "ten.keras"))
    # two Dense (a kernel each: batch norm has the bias) and two BatchNormalization (4 each) loaded; the head's
    # kernel and bias new
    assert (loaded.loaded, loaded.skipped, loaded.new) == (10, 2, 2)
    assert loaded.new_layers == loaded.skipped_layers == ("predictions:0",)
    for a, b in zip(source.weights[:-2], target.weights[:-2]):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    same = mlp(10)
    assert init_from.apply(same, str(tmp_path / "ten.keras")).new == 0


def test_a_model_that_shares_no_layer_and_a_missing_source_are_one_line(tmp_path, capfd):
    mlp(10).save(tmp_path / "ten.keras")
    (tmp_path / "notarun").mkdir()
    base = ["train", "--experiment=xor", f"--model_dir={tmp_path / 'run'}", "--strategy=cpu"]
    cases = [("no shared layer", [*base, f"--config.model.init_from={tmp_path / 'ten.keras'}"], "shares no layer"),
             ("missing file", [*base, f"--config.model.init_from={tmp_path / 'gone.keras'}"], "is not there"),
             ("not a run", [*base, f"--config.model.init_from={tmp_path / 'notarun'}"], "neither a run directory")]
    assert not cli_failures(cases, tmp_path, capfd)


def test_a_text_gpt_run_continues_on_another_corpus_from_every_tensor(tmp_path, monkeypatch):
    for corpus, text in (("first", "def f(x):\n    return x + 1\n"), ("second", "class A:\n    pass\n")):
        (tmp_path / corpus).mkdir()
        for i in range(8):
            (tmp_path / corpus / f"{i}.py").write_text(text * (20 + i))
    tiny = {"model.embed_dim": 16, "model.num_layers": 1, "data.sequence_length": 16, "train.batch_size": 4,
            "train.epochs": 1, "train.steps_per_epoch": 2, "train.eval_steps": 1, "train.tensorboard": False,
            "data.train_split": "train[:75%]", "data.eval_split": "train[75%:]"}
    first = nntrain.load_config("text_gpt", {**tiny, "data.source": f"text:{tmp_path / 'first'}/*.py"})
    nntrain.train(first, str(tmp_path / "lm"), strategy="cpu", verbose=0)
    results, apply = [], init_from.apply
    monkeypatch.setattr(init_from, "apply", lambda *args: results.append(apply(*args)) or results[-1])
    second = nntrain.load_config("text_gpt", {**tiny, "data.source": f"text:{tmp_path / 'second'}/*.py",
                                              "model.init_from": str(tmp_path / "lm")})
    nntrain.train(second, str(tmp_path / "lm2"), strategy="cpu", verbose=0)
    [loaded] = results
    assert loaded.loaded == 20 and loaded.skipped == loaded.new == 0  # every tensor of the 1-layer GPT


def test_a_resumed_run_never_reads_init_from_again(tmp_path):
    source = tmp_path / "source.keras"
    tiny = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:64]", "data.eval_split": "test[64:96]",
            "train.batch_size": 32, "train.tensorboard": False, "model.hidden_sizes": "8",
            "model.init_from": str(source)}
    keras.saving.save_model(mlp(10), source)
    first = nntrain.load_config("mnist_mlp", {**tiny, "train.epochs": 1})
    second = nntrain.load_config("mnist_mlp", {**tiny, "train.epochs": 2})
    first.model.hidden_sizes = second.model.hidden_sizes = MLP["hidden_sizes"]
    nntrain.train(first, str(tmp_path / "run"), strategy="cpu", verbose=0)
    source.unlink()  # resuming would fail if it read init_from again
    assert nntrain.train(second, str(tmp_path / "run"), strategy="cpu", verbose=0)["epoch"] == 2
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
