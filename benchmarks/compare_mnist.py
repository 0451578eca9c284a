"""mnist_mlp side by side, in one process: (a) the classic Keras script, (b) hand-tuned Keras on tf.data, (c) nntrain.

  .venv/bin/python benchmarks/compare_mnist.py --repeats=3            # prints the markdown of docs/benchmarks.md
  .venv/bin/python benchmarks/compare_mnist.py --whole_process_only   # only the whole-process pairs

Data: the official MNIST test set (NNTRAIN_MNIST_DIR, default ../shared/data/mnist), first 8,000 images to train,
last 2,000 to evaluate. Every repeat runs (a), (b) and (c) in a rotated order, then times (b)'s and (c)'s training
steps in alternating pairs, then runs `nntrain.bench` on mnist_mlp and on cifar10_resnet (random uint8 images of
CIFAR-10's shape in an npz file: no CIFAR-10 here). Each ratio is computed within its repeat; the tables report
medians over repeats. Before the repeats, the whole-process pairs: `nntrain train --experiment=mnist_mlp` (the
Makefile's MNIST_FLAGS) and benchmarks/mnist_keras_script.py (the same model, recipe and split in plain Keras: no
checkpoints), each a fresh process timed from its start to its exit, alternately (K n, n K, ...).

(a) Dense 256-128-10 on NumPy arrays, `model.fit(batch_size=32, epochs=5)`, then `model.evaluate`.
(b) The same model, `fit` on a cached, shuffled, batched (nntrain's batch size), vectorised-map, prefetched
    tf.data pipeline with nntrain's steps_per_execution, validated every epoch, for nntrain's epochs.
(c) `nntrain.train` with mnist_mlp's defaults (checkpoints, metrics file, TensorBoard, validation every epoch).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import keras
import ml_collections
import numpy as np
import tensorflow as tf

import nntrain
from nntrain.benchmark import runner, throughput
from nntrain.data import idx
from nntrain.distribute import execution, strategies
from nntrain.run import trainer

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
MNIST = {"data.source": f"idx:{MNIST_DIR}", "data.train_split": "test[:8000]", "data.eval_split": "test[8000:]"}
TRAIN, TARGET_ACCURACY = 8000, 0.96
CLASSIC_BATCH, CLASSIC_EPOCHS = 32, 5
CIFAR_SHAPE, CIFAR_TRAIN, CIFAR_EVAL = (32, 32, 3), 10_000, 1_000
TARGETS = {"throughput": 0.97, "time_to_accuracy": 0.5, "pipeline": 5.0}


@dataclasses.dataclass
class Run:
    seconds: float  # wall time to the end of the run (a) or to the target accuracy (c)
    accuracy: float  # final eval accuracy
    epoch_examples_per_second: float  # median over epochs 2.. of train examples / epoch wall time


def _progress(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", file=sys.stderr, flush=True)


def _mnist_arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    images, labels = idx.load(str(MNIST_DIR))["test"]
    return images[:TRAIN], labels[:TRAIN], images[TRAIN:], labels[TRAIN:]


def _dense_256_128_10(steps_per_execution: int = 1) -> keras.Model:
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(256, activation="relu"), keras.layers.Dense(128, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    return model


class _EpochClock(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.ends.append(time.perf_counter())


def _epoch_rate(ends: list[float], examples_per_epoch: int) -> float:
    """Median examples/s over epochs 2..: each epoch from the previous epoch's end to its own end."""
    return examples_per_epoch / statistics.median(np.diff(ends))


def classic_keras() -> Run:
    """(a) The script most tutorials show: NumPy arrays, batch 32, 5 epochs, then evaluate."""
    start = time.perf_counter()
    x, y, x_eval, y_eval = _mnist_arrays()
    x, x_eval = x / 255.0, x_eval / 255.0
    model = _dense_256_128_10()
    clock = _EpochClock()
    model.fit(x, y, batch_size=CLASSIC_BATCH, epochs=CLASSIC_EPOCHS, callbacks=[clock], verbose=0)
    _, accuracy = model.evaluate(x_eval, y_eval, verbose=0)
    return Run(time.perf_counter() - start, accuracy, _epoch_rate(clock.ends, TRAIN))


def _tuned_datasets(batch: int) -> tuple[tf.data.Dataset, tf.data.Dataset]:
    x, y, x_eval, y_eval = _mnist_arrays()

    def scale(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        return tf.cast(images, tf.float32) / 255.0, labels

    train = tf.data.Dataset.from_tensor_slices((x, y)).cache().shuffle(TRAIN).batch(batch)
    evaluation = tf.data.Dataset.from_tensor_slices((x_eval, y_eval)).batch(batch).cache()
    return (train.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE),
            evaluation.map(scale, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE))


def tuned_keras(config: ml_collections.ConfigDict, steps_per_execution: int) -> Run:
    """(b) Plain Keras, hand-tuned: tf.data cached, vectorised and prefetched, at nntrain's batch and epochs."""
    start = time.perf_counter()
    train, evaluation = _tuned_datasets(config.train.batch_size)
    model = _dense_256_128_10(steps_per_execution)
    clock = _EpochClock()
    history = model.fit(train, epochs=config.train.epochs, validation_data=evaluation, callbacks=[clock], verbose=0)
    return Run(time.perf_counter() - start, history.history["val_accuracy"][-1], _epoch_rate(clock.ends, TRAIN))


def step_rate_pairs(config: ml_collections.ConfigDict, steps_per_execution: int, steps: int,
                    pairs: int) -> list[tuple[float, float]]:
    """(b)'s and (c)'s steady-state training examples/s, timed as `nntrain bench` times, alternately (b c, c b, ...).

    (c) is `trainer.prepare`'s pipeline and compiled model, the ones `nntrain bench` and `nntrain train` use.
    """
    train, _ = _tuned_datasets(config.train.batch_size)
    prepared = trainer.prepare(config, strategies.create_strategy("auto"))
    contenders = {"b": (_dense_256_128_10(steps_per_execution), train.repeat(), steps_per_execution),
                  "c": (prepared.model, prepared.data.train, prepared.execution.steps_per_execution)}
    results = []
    for pair in range(pairs):
        rates = {}
        for name in ("b", "c") if pair % 2 == 0 else ("c", "b"):
            model, dataset, per_execution = contenders[name]
            timing = throughput.time_model(model, dataset, per_execution, runner.WARMUP_EXECUTIONS, steps)
            rates[name] = timing.timed_steps * config.train.batch_size / timing.timed_seconds
        results.append((rates["b"], rates["c"]))
    return results


def nntrain_defaults(config: ml_collections.ConfigDict) -> Run:
    """(c) nntrain.train with the experiment's defaults; seconds: until an epoch reaches TARGET_ACCURACY.

    Read afterwards from the `wall_time` of each metrics.jsonl line (nntrain.train takes no callbacks), so
    nothing runs beside (c) while it trains.
    """
    with tempfile.TemporaryDirectory() as model_dir:
        start = time.time()
        metrics = nntrain.train(config, os.path.join(model_dir, "run"), strategy="auto", verbose=0)
        lines = nntrain.history(os.path.join(model_dir, "run"))
    reached = [line["wall_time"] for line in lines if line["val_accuracy"] >= TARGET_ACCURACY]
    examples_per_epoch = math.ceil(TRAIN / config.train.batch_size) * config.train.batch_size
    return Run(reached[0] - start if reached else math.inf, metrics["val_accuracy"],
               _epoch_rate([line["wall_time"] for line in lines], examples_per_epoch))


def _timed_process(command: list[str]) -> tuple[float, float]:
    """(wall seconds from start to exit, CPU seconds of the process and its children) of one command."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def whole_process_pairs(steps_per_execution: int, pairs: int) -> list[dict]:
    """`nntrain train` against the plain-Keras script, each a fresh process, alternately (K n, n K, ...):
    per pair {keras: (wall, cpu), nntrain: (wall, cpu)}."""
    nntrain_cli = str(Path(sys.executable).parent / "nntrain")
    keras_script = [sys.executable, str(REPO / "benchmarks" / "mnist_keras_script.py"), str(MNIST_DIR),
                    str(steps_per_execution)]
    results = []
    with tempfile.TemporaryDirectory() as directory:
        for pair in range(pairs):
            model_dir = os.path.join(directory, f"run{pair}")
            commands = {"keras": keras_script,
                        "nntrain": [nntrain_cli, "train", "--experiment=mnist_mlp", f"--model_dir={model_dir}",
                                    *(f"--config.{key}={value}" for key, value in MNIST.items())]}
            order = ("keras", "nntrain") if pair % 2 == 0 else ("nntrain", "keras")
            results.append({name: _timed_process(commands[name]) for name in order})
            _progress(f"whole process, pair {pair + 1}: nntrain {results[-1]['nntrain'][0]:.2f} s, "
                      f"Keras {results[-1]['keras'][0]:.2f} s")
    return results


def whole_process_markdown(results: list[dict], load: tuple[float, ...]) -> str:
    """The whole-process table: median [min–max] over pairs, and the median of the per-pair ratios."""
    def side(name: str, which: int) -> list[float]:
        return [r[name][which] for r in results]

    ratios = [r["nntrain"][0] / r["keras"][0] for r in results]
    cpu_ratios = [r["nntrain"][1] / r["keras"][1] for r in results]
    return "\n".join([
        f"Whole process, {len(results)} alternating pairs; load average at start and end "
        f"{', '.join(f'{x:.1f}' for x in load)}; median [min–max].", "",
        "| | plain-Keras script | `nntrain train` | nntrain / Keras (per pair) | target |", "|---|---|---|---|---|",
        f"| start to exit, s | {_spread(side('keras', 0), '.2f')} | {_spread(side('nntrain', 0), '.2f')} | "
        f"{_spread(ratios, '.3f')} ({', '.join(f'{r:.2f}' for r in ratios)}) | <= 1.0: "
        f"{'yes' if statistics.median(ratios) <= 1.0 else '**no**'} |",
        f"| CPU time (all threads), s | {_spread(side('keras', 1), '.2f')} | {_spread(side('nntrain', 1), '.2f')} | "
        f"{_spread(cpu_ratios, '.3f')} | |"])


def nntrain_bench(experiment: str, overrides: dict, steps: int) -> dict:
    return nntrain.bench(nntrain.load_config(experiment, overrides), strategy="auto", steps=steps)


def _cifar_shaped_npz(directory: str) -> dict:
    """Random uint8 images of CIFAR-10's shape, so cifar10_resnet's real pipeline (cache, flip_crop) runs."""
    rng = np.random.default_rng(0)
    path = os.path.join(directory, "cifar_shaped.npz")
    np.savez(path, x_train=rng.integers(0, 256, (CIFAR_TRAIN, *CIFAR_SHAPE), dtype=np.uint8),
             y_train=rng.integers(0, 10, CIFAR_TRAIN), x_test=rng.integers(0, 256, (CIFAR_EVAL, *CIFAR_SHAPE),
                                                                           dtype=np.uint8),
             y_test=rng.integers(0, 10, CIFAR_EVAL))
    return {"data.source": f"npz:{path}", "data.train_split": "train", "data.eval_split": "test"}


def _warm_up() -> None:
    """One tiny fit, so that TensorFlow's one-time start-up is charged to no contender."""
    model = _dense_256_128_10()
    model.fit(np.zeros((64, 28, 28), np.float32), np.zeros(64, np.int32), batch_size=32, verbose=0)
    keras.backend.clear_session()


def one_repeat(index: int, config: ml_collections.ConfigDict, steps_per_execution: int, args: argparse.Namespace,
               cifar: dict) -> dict:
    """(a), (b), (c) in an order rotated by `index`, then the step-rate pairs and both `nntrain bench` runs."""
    contenders = [("a", classic_keras), ("b", lambda: tuned_keras(config, steps_per_execution)),
                  ("c", lambda: nntrain_defaults(config))]
    runs = {}
    for name, contender in contenders[index % 3:] + contenders[:index % 3]:
        _progress(f"repeat {index + 1}: ({name})")
        keras.backend.clear_session()
        runs[name] = contender()
    _progress(f"repeat {index + 1}: step rates of (b) and (c), then nntrain bench of mnist_mlp and cifar10_resnet")
    keras.backend.clear_session()
    pairs = step_rate_pairs(config, steps_per_execution, args.mnist_steps, args.pairs)
    mnist = nntrain_bench("mnist_mlp", MNIST, args.mnist_steps)
    resnet = nntrain_bench("cifar10_resnet", cifar, args.cifar_steps)
    return {"runs": {name: dataclasses.asdict(run) for name, run in runs.items()}, "step_pairs": pairs,
            "mnist_bench": mnist, "cifar_bench": resnet,
            "ratios": {"step_throughput": statistics.median(c / b for b, c in pairs),
                       "epoch_throughput": runs["c"].epoch_examples_per_second
                       / runs["b"].epoch_examples_per_second,
                       "time_to_accuracy": runs["c"].seconds / runs["a"].seconds,
                       "mnist_pipeline": mnist["pipeline_ratio"], "cifar_pipeline": resnet["pipeline_ratio"]}}


def _machine() -> str:
    model = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        names = [line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")]
        model = names[0] if names else model
    gpus = tf.config.list_physical_devices("GPU")
    return (f"{model}, {len(os.sched_getaffinity(0))} CPU cores usable, {len(gpus)} GPU(s); TensorFlow "
            f"{tf.__version__}, Keras {keras.__version__}, Python {platform.python_version()}; load average at "
            f"start {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


def _spread(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(min(values), fmt)}–{format(max(values), fmt)}]"


def markdown(repeats: list[dict], machine: str) -> str:
    """The tables of docs/benchmarks.md: medians over repeats, [min–max] beside them."""
    def runs(name: str, key: str) -> list[float]:
        return [r["runs"][name][key] for r in repeats]

    def ratio(key: str) -> list[float]:
        return [r["ratios"][key] for r in repeats]

    def bench(which: str, key: str) -> list[float]:
        return [r[which][key] for r in repeats]

    def verdict(values: list[float], target: float, at_least: bool) -> str:
        median = statistics.median(values)
        return "yes" if (median >= target if at_least else median <= target) else "**no**"

    lines = [f"Machine: {machine}.", f"Repeats: {len(repeats)}; medians, [min–max] over repeats.", "",
             "| | (a) classic Keras | (b) hand-tuned Keras | (c) nntrain |", "|---|---|---|---|",
             f"| final eval accuracy | {_spread(runs('a', 'accuracy'), '.4f')} | "
             f"{_spread(runs('b', 'accuracy'), '.4f')} | {_spread(runs('c', 'accuracy'), '.4f')} |",
             f"| wall time, s: (a) to its final accuracy, (c) to {TARGET_ACCURACY:.0%} | "
             f"{_spread(runs('a', 'seconds'), '.2f')} | | {_spread(runs('c', 'seconds'), '.2f')} |",
             f"| epochs 2+, train examples/s (epoch wall time, incl. validation and callbacks) | "
             f"{_spread(runs('a', 'epoch_examples_per_second'), ',.0f')} | "
             f"{_spread(runs('b', 'epoch_examples_per_second'), ',.0f')} | "
             f"{_spread(runs('c', 'epoch_examples_per_second'), ',.0f')} |",
             f"| steady-state training steps, examples/s (`nntrain bench` timing, alternating pairs) | | "
             f"{_spread([statistics.median(b for b, _ in r['step_pairs']) for r in repeats], ',.0f')} | "
             f"{_spread([statistics.median(c for _, c in r['step_pairs']) for r in repeats], ',.0f')} |", "",
             "| target | measured | met |", "|---|---|---|"]
    for label, key, target, at_least in (
            ("(c) / (b) steady-state step throughput >= 0.97", "step_throughput", TARGETS["throughput"], True),
            ("(c) / (b) epoch throughput >= 0.97", "epoch_throughput", TARGETS["throughput"], True),
            (f"(c) time to {TARGET_ACCURACY:.0%} / (a) time to its final accuracy <= 0.5", "time_to_accuracy",
             TARGETS["time_to_accuracy"], False),
            ("input pipeline / model consumption >= 5, mnist_mlp (real MNIST)", "mnist_pipeline",
             TARGETS["pipeline"], True),
            ("input pipeline / model consumption >= 5, cifar10_resnet (random CIFAR-shaped uint8)",
             "cifar_pipeline", TARGETS["pipeline"], True)):
        lines.append(f"| {label} | {_spread(ratio(key), '.2f')} | {verdict(ratio(key), target, at_least)} |")
    lines += ["", "`nntrain bench` (auto strategy, defaults):", "",
              "| experiment | examples/s | step ms | pipeline examples/s | FLOPs/example | achieved GFLOP/s | "
              "peak GFLOP/s | MFU |", "|---|---|---|---|---|---|---|---|"]
    for which, name in (("mnist_bench", "mnist_mlp"), ("cifar_bench", "cifar10_resnet")):
        lines.append(f"| {name} | {_spread(bench(which, 'examples_per_second'), ',.0f')} | "
                     f"{_spread([1e3 * v for v in bench(which, 'step_seconds')], '.3g')} | "
                     f"{_spread(bench(which, 'pipeline_examples_per_second'), ',.0f')} | "
                     f"{statistics.median(bench(which, 'flops_per_example')) / 1e6:.3g} M | "
                     f"{_spread([v / 1e9 for v in bench(which, 'achieved_flops_per_second')], '.3g')} | "
                     f"{_spread([v / 1e9 for v in bench(which, 'peak_flops_per_second')], '.3g')} | "
                     f"{_spread([100 * v for v in bench(which, 'mfu')], '.2g')}% |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--mnist_steps", type=int, default=400, help="timed steps of each step-rate measurement")
    parser.add_argument("--pairs", type=int, default=4, help="alternating (b)/(c) step-rate pairs per repeat")
    parser.add_argument("--cifar_steps", type=int, default=8, help="timed steps of the cifar10_resnet bench")
    parser.add_argument("--whole_process_pairs", type=int, default=5,
                        help="alternating pairs of fresh processes: nntrain train and the plain-Keras script")
    parser.add_argument("--whole_process_only", action="store_true", help="print only the whole-process table")
    parser.add_argument("--json", help="also write every measurement to this file")
    args = parser.parse_args()
    if not list(MNIST_DIR.glob("t10k-images-idx3-ubyte*")):
        sys.exit(f"no MNIST IDX files in {MNIST_DIR}: set NNTRAIN_MNIST_DIR")
    machine = _machine()
    config = nntrain.load_config("mnist_mlp", MNIST)
    steps_per_execution = execution.resolve(config.train, strategies.create_strategy("auto"),
                                            math.ceil(TRAIN / config.train.batch_size)).steps_per_execution
    load = os.getloadavg()
    processes = whole_process_pairs(steps_per_execution, args.whole_process_pairs)
    whole = whole_process_markdown(processes, (*load, *os.getloadavg()))
    if args.whole_process_only:
        print(whole)
        return
    _warm_up()
    with tempfile.TemporaryDirectory() as directory:
        cifar = _cifar_shaped_npz(directory)
        repeats = [one_repeat(i, config, steps_per_execution, args, cifar) for i in range(args.repeats)]
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": machine, "whole_process": processes, "repeats": repeats},
                                              indent=1) + "\n")
    print(markdown(repeats, machine) + "\n\n" + whole)


if __name__ == "__main__":
    main()
