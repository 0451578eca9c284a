"""model.init_from: a run starts from another run's layers (name and shape), and transfer is real: a CNN trained
on MNIST digits 0-4 and fine-tuned on 20 images per class of digits 5-9 beats the same CNN from scratch."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image

import nntrain
from nntrain.data import idx

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
