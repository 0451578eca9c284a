"""What a step checkpoint costs: the time of one `Checkpoints.save` against the time of a training step.

  .venv/bin/python benchmarks/checkpoint_cost.py --repeats=5     # prints the markdown table of docs/benchmarks.md

Random data of each experiment's shape (data.source=synthetic): the cost of a save depends on the model, not the
data. Each experiment is compiled as `nntrain train` compiles it (default steps_per_execution), warmed up, then
timed: `--steps` training steps (median step time over repeats), and `--repeats` checkpoint saves (median), each a
whole commit (step-N.keras with optimizer state, weight check, state.json) into a local temporary directory.
The share of training time uses each experiment's real epoch length (MNIST 60,000 and CIFAR-10 50,000 images at
batch size 128) with the default train.checkpoint_every_steps=0 (one save per epoch), and with every 100 steps.
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time

import nntrain
from nntrain.distribute import strategies
from nntrain.run import checkpoints, trainer

REAL_TRAIN_EXAMPLES = {"mnist_mlp": 60_000, "cifar10_resnet": 50_000}


def measure(experiment: str, steps: int, repeats: int) -> dict:
    config = nntrain.load_config(experiment, {"data.source": "synthetic", "data.num_examples": 1024,
                                              "train.epochs": 1})
    prepared = trainer.prepare(config, strategies.create_strategy("cpu"))
    model, per_execution = prepared.model, prepared.execution.steps_per_execution
    steps = max(per_execution, steps // per_execution * per_execution)
    model.fit(prepared.data.train, steps_per_epoch=steps, epochs=1, verbose=0)  # trace and warm up
    step_seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.fit(prepared.data.train, steps_per_epoch=steps, epochs=1, verbose=0)
        step_seconds.append((time.perf_counter() - start) / steps)
    with tempfile.TemporaryDirectory() as directory:
        saver = checkpoints.Checkpoints(directory, config.train.monitor)
        saver.set_model(model)
        saver.save(0)  # warm-up
        saver.saved_seconds.clear()
        for step in range(1, repeats + 1):
            saver.save(step)
    save = statistics.median(saver.saved_seconds)
    step = statistics.median(step_seconds)
    epoch_steps = math.ceil(REAL_TRAIN_EXAMPLES[experiment] / config.train.batch_size)
    return {"experiment": experiment, "params": model.count_params(), "step_ms": step * 1e3, "save_ms": save * 1e3,
            "per_epoch_pct": 100 * save / (epoch_steps * step), "every_100_pct": 100 * save / (100 * step),
            "epoch_steps": epoch_steps}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rows = [measure(name, args.steps, args.repeats) for name in REAL_TRAIN_EXAMPLES]
    print("| experiment | parameters | step (ms) | checkpoint save (ms) | per epoch (default) | every 100 steps |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['experiment']} | {r['params']:,} | {r['step_ms']:.1f} | {r['save_ms']:.0f} | "
              f"{r['per_epoch_pct']:.2f}% of {r['epoch_steps']} steps | {r['every_100_pct']:.1f}% |")


if __name__ == "__main__":
    main()
