"""text_gpt:base (GPT-2 small's shape, context 1024) end to end on CPU: 20 steps with gradient accumulation and
step checkpoints, a run stopped by SIGTERM and resumed (bit-identical to the straight run), then generation.

  .venv/bin/python benchmarks/base_lm.py --batch_size=2 --steps=20     # prints the figures of docs/language_model.md

Each phase runs in its own process (`--phase`), so that its peak resident memory is its own: `straight` trains
--steps steps (2 epochs), `stopped` trains the same config and receives SIGTERM after step --steps/2 (mid-run,
with its checkpoint), `resumed` continues it to the end, `generate` samples --new_tokens from the straight run's
model. Tokens/s count the steps after the first execution (which compiles). Step checkpoints are written in the
background (run/checkpoints.py): for each, the seconds the training thread spent in `Checkpoints.save` (waiting for
the write before it, starting this one) and the seconds from its start to its commit (state.json names it).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf

import nntrain
from nntrain.exports import artifacts, serving
from nntrain.run import checkpoints
from nntrain.run.preemption import Preempted


def config(args):
    half = args.steps // 2
    return nntrain.load_config("text_gpt:base", {
        "train.batch_size": args.batch_size, "optimizer.gradient_accumulation_steps": 2, "train.epochs": 2,
        "train.steps_per_epoch": half, "train.checkpoint_every_steps": half // 2, "train.eval_steps": 1,
        "schedule.warmup_steps": 2, "train.tensorboard": False, "train.steps_per_execution": 1})


class Clock(keras.callbacks.Callback):
    """Step end times; and SIGTERM to this process after step `stop_after` (0: never)."""

    def __init__(self, stop_after: int = 0):
        super().__init__()
        self.marks, self.stop_after, self.steps = [], stop_after, 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        self.marks.append(time.perf_counter())
        if self.steps == self.stop_after:
            os.kill(os.getpid(), signal.SIGTERM)


def phase(args) -> dict:
    saves, writers = [], []
    original = checkpoints.Checkpoints.save

    def timed_save(self, *a, **k):
        start = time.perf_counter()
        original(self, *a, **k)
        saves.append(time.perf_counter() - start)
        writers[:] = [self]

    checkpoints.Checkpoints.save = timed_save
    run_config = config(args)
    tokens = run_config.train.batch_size * run_config.data.sequence_length
    result: dict = {"phase": args.phase}
    if args.phase == "generate":  # as `nntrain generate` does, timing the first call (compiles) apart
        start = time.perf_counter()
        sample = tf.function(serving.generation(artifacts.load_model(args.dir, "final")),
                             input_signature=serving.GENERATE_INPUTS, autograph=False)
        settings = {"temperature": tf.constant(1.0), "top_k": tf.constant(40), "top_p": tf.constant(1.0)}
        sample(prompts=tf.constant([b"def "]), max_new_tokens=tf.constant(10), seed=tf.constant(0), **settings)
        result["start_seconds"] = time.perf_counter() - start
        start = time.perf_counter()
        text = sample(prompts=tf.constant([b"def "]), max_new_tokens=tf.constant(args.new_tokens),
                      seed=tf.constant(1), **settings)["text"].numpy()[0]
        result.update(seconds=time.perf_counter() - start, new_tokens=len(text))
    else:
        clock = Clock(args.steps // 2 if args.phase == "stopped" else 0)
        try:
            nntrain.train(run_config, args.dir, strategy="cpu", verbose=0, callbacks=[clock])
        except Preempted as e:
            result["stopped"] = str(e)
        marks = clock.marks
        result.update(steps=clock.steps,
                      tokens_per_second=tokens * (len(marks) - 1) / (marks[-1] - marks[0]) if len(marks) > 1 else None,
                      checkpoint_seconds=saves, write_seconds=writers[0].saved_seconds if writers else [])
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_size", type=int, default=2)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--new_tokens", type=int, default=200)
    parser.add_argument("--phase", choices=["straight", "stopped", "resumed", "generate"])
    parser.add_argument("--dir")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(phase(args)))
        return
    root = tempfile.mkdtemp(prefix="base_lm_")
    results = {}
    for name, directory in (("straight", "straight"), ("stopped", "stopped"), ("resumed", "stopped"),
                            ("generate", "straight")):
        command = [sys.executable, __file__, f"--phase={name}", f"--dir={root}/{directory}",
                   f"--batch_size={args.batch_size}", f"--steps={args.steps}", f"--new_tokens={args.new_tokens}"]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            sys.exit(f"{name} failed:\n{done.stderr[-3000:]}")
        results[name] = json.loads(done.stdout.splitlines()[-1])
        print(f"{time.strftime('%H:%M:%S')} {results[name]}", file=sys.stderr, flush=True)
    straight, resumed = (keras.saving.load_model(f"{root}/{d}/model.keras") for d in ("straight", "stopped"))
    identical = all(np.array_equal(a, b) for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True))
    run = results["straight"]
    base = config(args)
    print(f"| text_gpt:base, batch {args.batch_size} x {base.data.sequence_length} tokens, gradient accumulation 2 "
          f"| |\n|---|---|\n| parameters | {straight.count_params():,} |\n"
          f"| training tokens/s (after the first step) | {run['tokens_per_second']:,.0f} |\n"
          f"| peak memory, training | {run['peak_rss_gb']:.2f} GB |\n"
          f"| step checkpoint, training thread's time in save (median of {len(run['checkpoint_seconds'])}) | "
          f"{statistics.median(run['checkpoint_seconds']):.2f} s |\n"
          f"| step checkpoint, background write from start to commit (median of {len(run['write_seconds'])}) | "
          f"{statistics.median(run['write_seconds']):.1f} s |\n"
          f"| stopped by SIGTERM after step {args.steps // 2}, resumed: final weights bit-identical | {identical} |\n"
          f"| generation: start-up (load + compile + 10 tokens) | {results['generate']['start_seconds']:.1f} s |\n"
          f"| generation: {results['generate']['new_tokens']} new tokens | "
          f"{results['generate']['new_tokens'] / results['generate']['seconds']:,.0f} tokens/s |\n"
          f"| peak memory, generation | {results['generate']['peak_rss_gb']:.2f} GB |")


if __name__ == "__main__":
    main()
