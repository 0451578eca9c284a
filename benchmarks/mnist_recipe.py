"""How mnist_mlp's default optimizer recipe was chosen, on data the benchmark's eval split never sees.

  .venv/bin/python benchmarks/mnist_recipe.py --seeds=5        # about 2 minutes on 2 CPU cores

Each recipe trains mnist_mlp for its 10 epochs on the first 6,000 images of the local MNIST files and is
validated on the next 2,000; the last 2,000 (`test[8000:]`, the eval split of `make train` and of
compare_mnist.py) are not read. Prints, per recipe, the mean validation accuracy after each epoch over the seeds.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile

from compare_mnist import MNIST_DIR  # the sibling script: one place says where the MNIST files are

import nntrain

HELD_OUT = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:6000]",
            "data.eval_split": "test[6000:8000]", "train.tensorboard": False}
RECIPES = {
    "Adam 1e-3, constant (the usual tutorial)": {"optimizer.learning_rate": 1e-3, "schedule.name": "constant"},
    "Adam 1e-3, cosine": {"optimizer.learning_rate": 1e-3, "schedule.name": "cosine"},
    "Adam 3e-3, cosine": {"optimizer.learning_rate": 3e-3, "schedule.name": "cosine"},
    "Adam 5e-3, cosine": {"optimizer.learning_rate": 5e-3, "schedule.name": "cosine"},
    "Adam 1e-2, cosine": {"optimizer.learning_rate": 1e-2, "schedule.name": "cosine"},
}


def curve(overrides: dict, seed: int) -> list[float]:
    """Validation accuracy after each epoch of one run."""
    config = nntrain.load_config("mnist_mlp", {**HELD_OUT, **overrides, "seed": seed})
    with tempfile.TemporaryDirectory() as model_dir:
        nntrain.train(config, model_dir, strategy="auto", verbose=0)
        return [line["val_accuracy"] for line in nntrain.history(model_dir)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    args = parser.parse_args()
    rows = []
    for name, overrides in RECIPES.items():
        curves = [curve(overrides, seed) for seed in range(args.seeds)]
        means = [statistics.mean(epoch) for epoch in zip(*curves)]
        rows.append(f"| {name} | " + " | ".join(f"{m:.4f}" for m in means) + " |")
    epochs = len(means)
    print(f"Mean validation accuracy over seeds 0..{args.seeds - 1} (train test[:6000], validate test[6000:8000]):\n")
    print("| recipe | " + " | ".join(f"ep {e}" for e in range(1, epochs + 1)) + " |")
    print("|---|" + "---:|" * epochs)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
