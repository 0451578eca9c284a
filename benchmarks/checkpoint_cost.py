"""What step checkpoints cost: a ~50 M-parameter MLP with Adam and mnist_mlp, trained with a step checkpoint every
5 steps, without step checkpoints, and with the disk's floor (the same bytes written plainly), side by side,
alternated in one process.

  .venv/bin/python benchmarks/checkpoint_cost.py --pairs=3     # prints the table of docs/benchmarks.md
  .venv/bin/python benchmarks/checkpoint_cost.py --models=mlp_50m --training_threads=1   # a core left to the host
  .venv/bin/python benchmarks/checkpoint_cost.py --models=mlp_50m --batch_size=256       # longer steps

Random data of each model's input shape (data.source=synthetic): a checkpoint's cost depends on the model, not the
data. Each model is compiled as `nntrain train` compiles it, with steps_per_execution=1 (a save can start after any
step) and warmed up. Per round, three `fit` calls of --steps steps through nntrain's own `Checkpoints` callback into
a local temporary directory, in an order that rotates from round to round: "every 5",
`train.checkpoint_every_steps=5`; "none", 0 (both commit a checkpoint at the epoch end, whose write `fit` waits for;
no best.keras, a `.keras` save of ~2.5 s that is no step checkpoint's cost); "raw", 0 plus, at the steps where
"every 5" saves, the same number of bytes written from one preallocated buffer with O_DIRECT on a background thread
(no snapshot, no state.json, at most one write in flight): on a VM whose disk writes take the guest's CPU (steal),
the floor of any checkpoint writer. Figures: the ratio of the times of "every 5" and "raw" to "none" (median over
rounds), the training time lost per step checkpoint, the process's CPU seconds and the machine's steal seconds
(/proc/stat, all CPUs) of each fit, a write's time while training (nntrain's from its start to its commit, seen at
most a step late; raw's on its thread) and a bundle's write time on an idle trainer, the peak host memory of each
fit above the memory before it (VmHWM; with step checkpoints also against the model + optimizer bytes), the resume
(restore of the checkpoint into a built model) and, for comparison, the synchronous `.keras` save that step
checkpoints were. `--training_threads=1` runs TensorFlow's ops on one thread, leaving the other core to the writer,
as an accelerator's host leaves its CPUs while the device trains.
"""

from __future__ import annotations

import argparse
import mmap
import os
import statistics
import tempfile
import threading
import time

import keras
import numpy as np
import tensorflow as tf

import nntrain
from nntrain import rundir
from nntrain.distribute import strategies
from nntrain.run import bundles, checkpoints, trainer

WIDE = {"data.input_shape": (1444,), "model.hidden_sizes": (1444,) * 24, "train.batch_size": 8}  # ~50 M params
MODELS = {"mlp_50m": ("mnist_mlp", WIDE), "mnist_mlp": ("mnist_mlp", {})}
EVERY = 5
SIDES = ("every 5", "none", "raw")  # nntrain's step checkpoints, none, the same bytes written plainly
RAW_CHUNK = 8 << 20  # bytes per write of "raw": about one of mlp_50m's kernels, as the bundle writer writes them


def _memory() -> tuple[int, int]:
    """(resident, peak resident) bytes of this process; the peak since the last _reset_peak."""
    with open("/proc/self/status") as f:
        fields = dict(line.split(":", 1) for line in f)
    return int(fields["VmRSS"].split()[0]) * 1024, int(fields["VmHWM"].split()[0]) * 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _steal() -> float:
    """Seconds the hypervisor ran something else while this machine's CPUs wanted to run (all CPUs, so far)."""
    with open("/proc/stat") as f:
        return int(f.readline().split()[8]) / os.sysconf("SC_CLK_TCK")


class RawWrites(keras.callbacks.Callback):
    """At the steps where `Checkpoints(every_steps=EVERY)` saves, writes `buffer` to `path` with O_DIRECT on a
    background thread, RAW_CHUNK at a time, after the write in flight; waits for the last at the end of `fit`."""

    def __init__(self, path: str, buffer: mmap.mmap):
        super().__init__()
        self.path, self.buffer, self.thread = path, buffer, None
        self.seconds: list[float] = []  # each write's, on its thread

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if (batch + 1) % EVERY == 0 and batch + 1 < self.params["steps"]:  # as Checkpoints: not the last execution
            self.on_train_end()
            self.thread = threading.Thread(target=self._write)
            self.thread.start()

    def _write(self) -> None:
        start = time.perf_counter()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o644)
        try:
            for offset in range(0, len(self.buffer), RAW_CHUNK):
                bundles._write_all(fd, memoryview(self.buffer)[offset:offset + RAW_CHUNK])
        finally:
            os.close(fd)
        self.seconds.append(time.perf_counter() - start)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self.thread is not None:
            self.thread.join()


def measure(name: str, steps: int, pairs: int, batch_size: int) -> dict:
    experiment, overrides = MODELS[name]
    overrides = {**overrides, **({"train.batch_size": batch_size} if batch_size else {})}
    config = nntrain.load_config(experiment, {"data.source": "synthetic", "data.num_examples": max(1024, batch_size),
                                              "train.steps_per_execution": 1, "train.epochs": 1, **overrides})
    prepared = trainer.prepare(config, strategies.create_strategy("cpu"))
    model, data = prepared.model, prepared.data.train
    model.fit(data, steps_per_epoch=EVERY, epochs=1, verbose=0)  # trace and warm up
    nbytes = bundles.host_bytes(model)
    buffer = mmap.mmap(-1, -(-nbytes // mmap.PAGESIZE) * mmap.PAGESIZE)  # page-aligned, as O_DIRECT needs
    np.frombuffer(buffer, np.uint8)[:] = 1  # touched: its pages exist before the first write
    times: dict[str, list[float]] = {side: [] for side in SIDES}
    cpu: dict[str, list[float]] = {side: [] for side in SIDES}  # the process's CPU seconds
    steal: dict[str, list[float]] = {side: [] for side in SIDES}
    peaks = {side: [] for side in SIDES}
    busy: dict[str, list[list[float]]] = {"every 5": [], "raw": []}  # per fit, each write's time while training
    with tempfile.TemporaryDirectory() as directory:
        for pair in range(pairs):
            for side in SIDES[pair % 3:] + SIDES[:pair % 3]:
                saver = checkpoints.Checkpoints(rundir.join(directory, f"{pair}-{side}"), "loss", keep_best=False,
                                                every_steps=EVERY if side == "every 5" else 0,
                                                state={"step": int(model.optimizer.iterations)})  # saves at 5, 10..
                extra = [RawWrites(rundir.join(directory, "raw.data"), buffer)] if side == "raw" else []
                resident, _ = _memory()
                _reset_peak()
                start, start_cpu, start_steal = time.perf_counter(), time.process_time(), _steal()
                model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[saver, *extra])
                times[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
                steal[side].append(_steal() - start_steal)
                peaks[side].append(_memory()[1] - resident)
                if side in busy:  # the step checkpoints (the last of saver's is the epoch end's) or raw writes
                    busy[side].append(saver.saved_seconds[:-1] if side == "every 5" else extra[0].seconds)
        last = rundir.join(directory, f"{pairs - 1}-every 5")
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

    def against_none(side: str) -> tuple[float, float]:
        """(ratio of times, time lost per checkpoint) of `side` against the fit without, medians over rounds."""
        return (statistics.median(a / b for a, b in zip(times[side], times["none"])),
                statistics.median((a - b) / len(n) for a, b, n in zip(times[side], times["none"], busy[side])))

    return {"model": name, "params": model.count_params(), "bytes": nbytes, "steps": steps,
            "batch": config.train.batch_size,
            **{key: [statistics.median(values[side]) for side in SIDES]
               for key, values in (("time", times), ("cpu", cpu), ("steal", steal))},
            "against": {side: against_none(side) for side in ("every 5", "raw")},
            "write": statistics.median(writes),
            "busy": [statistics.median(sum(busy[side], [])) for side in busy],
            "peak": max(peaks["every 5"]), "peak_without": max(peaks["none"]),
            "resume": resume, "keras_save": keras_save, "saves": len(busy["every 5"][0])}


def _each(values: list[float]) -> str:
    return " / ".join(f"{value:.2f}" for value in values)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=30, help="steps per fit (a multiple of 5)")
    parser.add_argument("--pairs", type=int, default=3, help="rounds of the three fits")
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--training_threads", type=int, default=0,
                        help="TensorFlow's intra- and inter-op threads (0: one per core), e.g. 1 to leave a core to "
                             "the host's other work, as an accelerator's host has while the device trains")
    parser.add_argument("--batch_size", type=int, default=0, help="every model's batch size (0: its own; mlp_50m 8)")
    args = parser.parse_args()
    tf.config.threading.set_intra_op_parallelism_threads(args.training_threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.training_threads)
    rows = [measure(name, args.steps, args.pairs, args.batch_size) for name in args.models.split(",")]
    sides = " / ".join(SIDES)
    print(f"| model | parameters | model + optimizer | batch | step checkpoints per fit | {args.steps} steps, {sides} "
          f"(s) | ratio, every 5 (raw) | lost per checkpoint, every 5 (raw) | CPU s, {sides} | steal s, {sides} | "
          "write (idle) | write while training, every 5 / raw | peak host memory above start, every 5 / none | "
          "resume | `.keras` save (before) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        (ratio, lost), (raw_ratio, raw_lost) = r["against"]["every 5"], r["against"]["raw"]
        print(f"| {r['model']} | {r['params']:,} | {r['bytes'] / 2**20:,.0f} MiB | {r['batch']} | {r['saves']} | "
              f"{_each(r['time'])} | {ratio:.2f}x ({raw_ratio:.2f}x) | "
              f"{lost * 1e3:,.0f} ms ({raw_lost * 1e3:,.0f} ms) | "
              f"{_each(r['cpu'])} | {_each(r['steal'])} | {r['write'] * 1e3:,.0f} ms | {_each(r['busy'])} s | "
              f"{r['peak'] / 2**20:,.0f} MiB ({r['peak'] / r['bytes']:.2f}x) / {r['peak_without'] / 2**20:,.0f} MiB | "
              f"{r['resume'] * 1e3:,.0f} ms | "
              f"{r['keras_save'] * 1e3:,.0f} ms |")


if __name__ == "__main__":
    main()
