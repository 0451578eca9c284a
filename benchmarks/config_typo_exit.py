"""Wall time of a config typo on the command line: `nntrain train ... --config.train.bach_size=8` must exit 2
before TensorFlow is imported (issue 13: under 1 s).

    python benchmarks/config_typo_exit.py [--repeat=5]

Prints one line: the median and worst wall time of the whole `nntrain` process, and its exit code.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    repeat = parser.parse_args().repeat
    seconds, codes = [], set()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "nntrain.cli", "train", "--experiment=mnist_mlp", f"--model_dir={tmp}/run",
                   "--config.train.bach_size=8"]
        for _ in range(repeat):
            start = time.perf_counter()
            codes.add(subprocess.run(command, capture_output=True, timeout=60).returncode)
            seconds.append(time.perf_counter() - start)
    print(f"config typo exit: median {statistics.median(seconds):.3f} s, worst {max(seconds):.3f} s over {repeat} "
          f"runs; exit code(s) {sorted(codes)}")


if __name__ == "__main__":
    main()
