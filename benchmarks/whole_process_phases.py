"""Where the whole-process time goes: compare_mnist.py's pair (`nntrain train --experiment=mnist_mlp` with the
Makefile's MNIST_FLAGS, and benchmarks/mnist_keras_script.py) timed phase by phase, alternately (K n, n K, ...).

  .venv/bin/python benchmarks/whole_process_phases.py --pairs=3

Each side runs in a fresh process under this file (`--side`), which wraps the functions that begin and end each
phase and notes the wall time since the process started and the process's CPU time (all threads) at each; the
parent adds the exit: from the last note to the process's end (wall), and its total CPU (getrusage) minus the
last note's. Phases: start-up (Python, imports with TensorFlow and Keras, nntrain's CLI and config), data and
model (compiled), `fit` (10 epochs with validation and callbacks), the end (nntrain: model.keras and the report),
exit (the script: Python's teardown; nntrain ends at once, cli._end_process). Medians over the runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
MNIST_DIR = Path(os.environ.get("NNTRAIN_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
PHASES = ("start-up", "data and model", "fit", "end", "exit")
NOTES = ("start-up", "fit begins", "fit ends", "done")  # what each side notes, in order


def _since_start() -> float:
    """Seconds since this process started (/proc: the kernel's start time of the process)."""
    with open("/proc/self/stat") as f:
        start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
    with open("/proc/uptime") as f:
        return float(f.read().split()[0]) - start_ticks / os.sysconf("SC_CLK_TCK")


class _Notes:
    def __init__(self) -> None:
        self.zero = time.perf_counter() - _since_start()
        self.notes: dict[str, tuple[float, float]] = {}

    def __call__(self, name: str) -> None:
        self.notes.setdefault(name, (time.perf_counter() - self.zero, time.process_time()))

    def write(self) -> None:
        Path(os.environ["PHASES_OUT"]).write_text(json.dumps(self.notes))


def _wrap(owner: object, name: str, before: str, after: str, note: _Notes) -> None:
    function = getattr(owner, name)

    def wrapped(*args, **kwargs):
        note(before)
        result = function(*args, **kwargs)
        note(after)
        return result

    setattr(owner, name, wrapped)


def run_nntrain(note: _Notes, argv: list[str]) -> None:
    import dataclasses

    from nntrain import cli

    train = cli.COMMANDS["train"]

    def command(config, overrides):  # TensorFlow is imported by now (the config's validation needs Keras)
        from nntrain.run import trainer

        note("start-up")
        _wrap(trainer, "_fit_epochs", "fit begins", "fit ends", note)
        return train.run(config, overrides)

    cli.COMMANDS["train"] = dataclasses.replace(train, run=command)
    end = cli._end_process

    def end_process(code: int) -> None:
        note("done")
        note.write()
        end(code)

    cli._end_process = end_process
    sys.argv = ["nntrain", *argv]
    cli.run()


def run_keras(note: _Notes, argv: list[str]) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    import keras
    import mnist_keras_script

    note("start-up")
    _wrap(keras.Model, "fit", "fit begins", "fit ends", note)
    mnist_keras_script.main(argv[0], int(argv[1]))
    note("done")
    note.write()


def one_run(side: str, steps_per_execution: int, directory: str) -> dict[str, tuple[float, float]]:
    """{phase: (wall s, CPU s)} of one fresh process of `side`."""
    args = {"keras": [str(MNIST_DIR), str(steps_per_execution)],
            "nntrain": ["train", "--experiment=mnist_mlp", f"--model_dir={tempfile.mkdtemp(dir=directory)}",
                        f"--config.data.source=idx:{MNIST_DIR}", "--config.data.train_split=test[:8000]",
                        "--config.data.eval_split=test[8000:]"]}[side]
    out = os.path.join(directory, "notes.json")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run([sys.executable, __file__, f"--side={side}", "--", *args], check=True, env={**os.environ,
                   "PHASES_OUT": out}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    notes = json.loads(Path(out).read_text())
    marks = [(0.0, 0.0), *(notes[name] for name in NOTES), (wall, cpu)]  # a phase between each two
    return {phase: (marks[i + 1][0] - marks[i][0], marks[i + 1][1] - marks[i][1]) for i, phase in enumerate(PHASES)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--steps_per_execution", type=int, default=7, help="the script's (nntrain picks 7 here)")
    parser.add_argument("--side", choices=("keras", "nntrain"), help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        note = _Notes()
        (run_nntrain if args.side == "nntrain" else run_keras)(note, args.rest)
        return
    load = os.getloadavg()
    runs: dict[str, list[dict]] = {"keras": [], "nntrain": []}
    with tempfile.TemporaryDirectory() as directory:
        for pair in range(args.pairs):
            for side in ("keras", "nntrain") if pair % 2 == 0 else ("nntrain", "keras"):
                runs[side].append(one_run(side, args.steps_per_execution, directory))
            print(f"pair {pair + 1} done", file=sys.stderr, flush=True)

    def median(side: str, phase: str, which: int) -> float:
        return statistics.median(run[phase][which] for run in runs[side])

    print(f"{args.pairs} alternating pairs; load average at start and end "
          f"{', '.join(f'{x:.1f}' for x in (*load, *os.getloadavg()))}; medians, s.\n")
    print("| phase | Keras script, wall | `nntrain train`, wall | Keras script, CPU | `nntrain train`, CPU |")
    print("|---|---|---|---|---|")
    for phase in (*PHASES, "total"):
        cells = []
        for which in (0, 1):
            for side in ("keras", "nntrain"):
                value = (statistics.median(sum(run[p][which] for p in PHASES) for run in runs[side])
                         if phase == "total" else median(side, phase, which))
                cells.append(f"{value:.2f}")
        print(f"| {phase} | {' | '.join(cells)} |")


if __name__ == "__main__":
    main()
