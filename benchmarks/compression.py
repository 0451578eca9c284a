"""The measured table of docs/compression.md: accuracy and size of dense, pruned and TFLite mnist_mlp models.

  .venv/bin/python benchmarks/compression.py        # about 2.5 minutes on 2 CPU cores

mnist_mlp (its default 10-epoch recipe) is trained on the first 8,000 images of the local MNIST files, dense and
pruned to 50, 80 and 90% sparsity (prune.frequency=20, the target reached at 3/4 of training), and exported with
`nntrain export` (TFLite: none, float16, dynamic, int8; the 80% model also as int8). Accuracy is on the last
2,000 images (`test[8000:]`), given raw to the SavedModel and TFLite files as a client would; sizes are of the
exported file and of the same file gzipped (level 9), which shows what the zeros of pruning save.
"""

from __future__ import annotations

import gzip
import os
import tempfile

from compare_mnist import MNIST_DIR  # the sibling script: one place says where the MNIST files are

import nntrain

SPLIT_8K_2K = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:8000]",
               "data.eval_split": "test[8000:]", "train.tensorboard": False}
SPARSITIES = (0.0, 0.5, 0.8, 0.9)
TFLITE = {0.0: ("none", "float16", "dynamic", "int8"), 0.8: ("int8",)}


def train(sparsity: float, model_dir: str) -> None:
    overrides = {**SPLIT_8K_2K, "prune.target_sparsity": sparsity, "prune.frequency": 20}
    nntrain.train(nntrain.load_config("mnist_mlp", overrides), model_dir, strategy="auto", verbose=0)


def row(name: str, path: str, accuracy: float) -> str:
    with open(path, "rb") as f:
        data = f.read()
    return (f"| {name} | {accuracy:.4f} | {len(data) / 1024:,.0f} KB | "
            f"{len(gzip.compress(data, compresslevel=9)) / 1024:,.0f} KB |")


def main() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as work:
        for sparsity in SPARSITIES:
            model_dir = os.path.join(work, f"run-{sparsity}")
            train(sparsity, model_dir)
            label = f"pruned {sparsity:.0%}" if sparsity else "dense"
            for quantize in ("keras", *TFLITE.get(sparsity, ())):
                export_dir = os.path.join(work, f"export-{sparsity}-{quantize}")
                if quantize == "keras":
                    result = nntrain.export(model_dir, export_dir)
                    rows.append(row(f"{label}, model.keras", result["keras"], result["artifacts"][0]["accuracy"]))
                else:
                    result = nntrain.export(model_dir, export_dir, export_format="tflite", quantize=quantize)
                    rows.append(row(f"{label}, TFLite {quantize}", result["tflite"],
                                    result["artifacts"][-1]["accuracy"]))
    print("| model | accuracy | file | gzip -9 |\n|---|---:|---:|---:|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
