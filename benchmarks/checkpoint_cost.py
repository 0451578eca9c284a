"""What step checkpoints cost: a ~50 M-parameter MLP with Adam and mnist_mlp, trained with a step checkpoint every
5 steps and without step checkpoints, side by side, alternated in one process.

  .venv/bin/python benchmarks/checkpoint_cost.py --pairs=3     # prints the table of docs/benchmarks.md
  .venv/bin/python benchmarks/checkpoint_cost.py --models=mlp_50m --training_threads=1   # a core left to the host

Random data of each model's input shape (data.source=synthetic): a checkpoint's cost depends on the model, not the
data. Each model is compiled as `nntrain train` compiles it, with steps_per_execution=1 (a save can start after
any step) and warmed up. Per pair, two `fit` calls of --steps steps through nntrain's own `Checkpoints` callback
into a local temporary directory: `train.checkpoint_every_steps=5`, then 0 (both commit a checkpoint at the epoch
end, whose write `fit` waits for). Figures: the ratio of their times (median over pairs), the training time lost
per step checkpoint, the process's CPU seconds of each fit, a bundle's write time on an idle trainer, the peak host
memory of each fit above the memory before it (VmHWM; with step checkpoints also against the model + optimizer
bytes), the resume (restore of the checkpoint into a built model) and, for comparison, the synchronous `.keras` save
that step checkpoints were. `--training_threads=1` runs TensorFlow's ops on one thread, leaving the other core to the
writer, as an accelerator's host leaves its CPUs while the device trains.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import tensorflow as tf

import nntrain
from nntrain import rundir
from nntrain.distribute import strategies
from nntrain.run import bundles, checkpoints, trainer

WIDE = {"data.input_shape": (1444,), "model.hidden_sizes": (1444,) * 24, "train.batch_size": 8}  # ~50 M params
MODELS = {"mlp_50m": ("mnist_mlp", WIDE), "mnist_mlp": ("mnist_mlp", {})}
EVERY = 5


def _memory() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process; the peak since the last _reset_peak."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def measure(name: str, steps: int, pairs: int) -> dict:
    experiment, overrides = MODELS[name]
    config = nntrain.load_config(experiment, {"data.source": "synthetic", "data.num_examples": 1024,
                                              "train.steps_per_execution": 1, "train.epochs": 1, **overrides})
    prepared = trainer.prepare(config, strategies.create_strategy("cpu"))
    model, data = prepared.model, prepared.data.train
    model.fit(data, steps_per_epoch=EVERY, epochs=1, verbose=0)  # trace and warm up
    nbytes = bundles.host_bytes(model)
    times: dict[int, list[float]] = {EVERY: [], 0: []}
    cpu: dict[int, list[float]] = {EVERY: [], 0: []}  # the process's CPU seconds
    saves, peaks = [], {EVERY: [], 0: []}
    with tempfile.TemporaryDirectory() as directory:
        for pair in range(pairs):
            for every in (EVERY, 0):
                saver = checkpoints.Checkpoints(rundir.join(directory, f"{pair}-{every}"), "loss",
                                                every_steps=every, state={})
                resident, _ = _memory()
                _reset_peak()
                start, start_cpu = time.perf_counter(), time.process_time()
                model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[saver])
                times[every].append(time.perf_counter() - start)
                cpu[every].append(time.process_time() - start_cpu)
                peaks[every].append(_memory()[1] - resident)
                if every > 0:
                    saves.append(len(saver.saved_seconds) - 1)  # step checkpoints (the last is the epoch end)
        last = rundir.join(directory, f"{pairs - 1}-{EVERY}")
        path = rundir.join(last, rundir.read_state(last)["latest"])
        writer, writes = bundles.Writer(), []
        for index in range(3):
            start = time.perf_counter()
            writer.start(model, rundir.join(directory, f"idle-{index}"))
            writer.wait()
            writes.append(time.perf_counter() - start)
        start = time.perf_counter()
        bundles.read(model, path)
        resume = time.perf_counter() - start
        start = time.perf_counter()
        rundir.save_model(model, rundir.join(directory, "sync.keras"))
        keras_save = time.perf_counter() - start
    ratio = statistics.median(a / b for a, b in zip(times[EVERY], times[0]))
    lost = statistics.median((a - b) / n for a, b, n in zip(times[EVERY], times[0], saves))
    return {"model": name, "params": model.count_params(), "bytes": nbytes, "steps": steps,
            "with": statistics.median(times[EVERY]), "without": statistics.median(times[0]), "ratio": ratio,
            "cpu": (statistics.median(cpu[EVERY]), statistics.median(cpu[0])),
            "lost": lost, "write": statistics.median(writes), "peak": max(peaks[EVERY]), "peak_without": max(peaks[0]),
            "resume": resume,
            "keras_save": keras_save, "saves": saves[0]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30, help="steps per fit (a multiple of 5)")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--training_threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: one per core), e.g. 1 to leave a core to "
                             "the host's other work, as an accelerator's host has while the device trains")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.training_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.training_threads)
    rows = [measure(name, args.steps, args.pairs) for name in args.models.split(",")]
    print(f"| model | parameters | model + optimizer | {args.steps} steps, every {EVERY} / none (s) | ratio | lost "
          "per checkpoint | CPU s, every 5 / none | write (idle) | peak host memory above start, every 5 / none | "
          "resume | `.keras` save (before) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['model']} | {r['params']:,} | {r['bytes'] / 2**20:,.0f} MiB | {r['with']:.2f} / "
              f"{r['without']:.2f} | {r['ratio']:.2f}x | {r['lost'] * 1e3:,.0f} ms | "
              f"{r['cpu'][0]:.2f} / {r['cpu'][1]:.2f} | {r['write'] * 1e3:,.0f} ms | "
              f"{r['peak'] / 2**20:,.0f} MiB ({r['peak'] / r['bytes']:.2f}x) / {r['peak_without'] / 2**20:,.0f} MiB | "
              f"{r['resume'] * 1e3:,.0f} ms | "
              f"{r['keras_save'] * 1e3:,.0f} ms |")


if __name__ == "__main__":
    main()
