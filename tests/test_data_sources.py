"""Image folders, CSV files, Example TFRecords and `nntrain convert`, on real data (MNIST PNGs, scikit-learn digits)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nntrain
from nntrain.data import idx, sources

MNIST_DIR = os.environ.get("NNTRAIN_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason=f"no MNIST IDX files in {MNIST_DIR}")
MLP = {"data.train_split": "train", "data.eval_split": "test"}


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


@pytest.fixture(scope="session")
def mnist_pngs(tmp_path_factory) -> Path:
    """The MNIST test set as PNG files: the first 8,000 in train/<class>/, the last 2,000 in test/<class>/."""
    images, labels = idx.load(MNIST_DIR)["test"]
    root = tmp_path_factory.mktemp("mnist_png")
    write_pngs(root / "train", images[:8000], labels[:8000])
    write_pngs(root / "test", images[8000:], labels[8000:])
    return root


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """Class folders without split folders: 3 classes of 10 RGB images of 12x16, each a class's solid colour."""
    for label, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        folder = tmp_path / "colours" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (16, 12), colour).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return tmp_path / "colours"


def test_images_class_folders_are_one_shuffled_balanced_split(colour_folder, data_config):
    data_config.source = f"images:{colour_folder}"
    data_config.image_size = (8, 8)
    source = sources.open_source(data_config)
    assert source.class_names == ("class_0", "class_1", "class_2") and source.num_classes == 3
    first, rest = source.select("train[:50%]"), source.select("train[50%:]")
    assert (first.num_examples, rest.num_examples) == (15, 15)
    images, labels = zip(*first.dataset.as_numpy_iterator())
    assert images[0].shape == (8, 8, 3) and images[0].dtype == np.uint8  # resized in tf.data
    assert all(np.bincount(labels, minlength=3) >= 3)  # shuffled before slicing: every class in both halves
    for image, label in zip(images, labels):  # each class's colour survives decoding and resizing
        assert int(np.argmax(image.reshape(-1, 3).mean(axis=0))) == label
    data_config.channels = 1
    assert sources.open_source(data_config).select("train").dataset.element_spec[0].shape == (8, 8, 1)


@needs_mnist
@pytest.mark.slow
def test_mnist_pngs_train_mlp(mnist_pngs, tmp_path):
    model_dir = tmp_path / "run"
    config = nntrain.load_config("mnist_mlp", {"data.source": f"images:{mnist_pngs}", **MLP})
    metrics = nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] >= 0.96
    spec = json.loads((model_dir / "dataset.json").read_text())
    assert spec["class_names"] == [str(d) for d in range(10)] and spec["train_examples"] == 8000


def digits_csv(path: Path) -> Path:
    """scikit-learn's 1,797 digits (8x8, values 0-16) as a CSV with columns p0..p63 and `digit`, rows shuffled."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    rows = [",".join([f"p{i}" for i in range(64)] + ["digit"])]
    rows += [",".join(f"{v:g}" for v in x) + f",{y}" for x, y in zip(digits.data[order], digits.target[order])]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_csv_digits_trains_mlp(tmp_path):
    csv = digits_csv(tmp_path / "digits.csv")
    config = nntrain.load_config("mnist_mlp", {"data.source": f"csv:{csv}", "data.label_column": "digit",
                                               "data.train_split": "train[:80%]", "data.eval_split": "train[80%:]",
                                               "train.epochs": 20})
    metrics = nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] >= 0.95  # on the held-out 20%


def test_csv_splits_regression_and_text_labels(tmp_path, data_config):
    for split, rows in {"train": ["1.5,2,0.25", "3,4,1.75"], "test": ["5,6,-2"]}.items():
        (tmp_path / f"houses_{split}.csv").write_text("rooms,age,price\n" + "\n".join(rows) + "\n")
    data_config.source = f"csv:{tmp_path}/houses_{{split}}.csv"
    data_config.label_column = "price"
    source = sources.open_source(data_config)
    assert source.num_classes is None  # non-integer labels: regression
    (x, y), = source.select("test").dataset.as_numpy_iterator()
    assert x.tolist() == [5.0, 6.0] and y == -2.0
    (tmp_path / "flowers.csv").write_text("width,species\n1,setosa\n2,virginica\n3,setosa\n")
    data_config.source, data_config.label_column = f"csv:{tmp_path}/flowers.csv", "species"
    source = sources.open_source(data_config)
    assert source.class_names == ("setosa", "virginica")
    assert [int(y) for _, y in source.select("train").dataset.as_numpy_iterator()] == [0, 1, 0]
