"""preflight's memory estimate against the memory a text_gpt variant's training takes on this CPU.

  .venv/bin/python benchmarks/memory_estimate.py --variant=small --steps=16

The estimate (run.guards.estimate_memory, what `nntrain preflight` reports per replica) is taken at the variant's
whole batch on one device. The measured figure is the peak resident memory of training (`fit` for --steps steps)
minus the resident memory just before the model and data were built (TensorFlow's runtime, the imports): what
the model, its optimizer, activations and the input pipeline added. The process's whole peak is printed too.
"""

from __future__ import annotations

import argparse
import resource

import nntrain
from nntrain.distribute import strategies
from nntrain.run import trainer
from nntrain.run.guards import estimate_memory

GIB = 2**30


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="small")
    parser.add_argument("--steps", type=int, default=16)
    args = parser.parse_args()
    config = nntrain.load_config(f"text_gpt:{args.variant}", {"train.steps_per_execution": 1})
    strategy = strategies.create_strategy("cpu")
    before = resident_bytes()
    prepared = trainer.prepare(config, strategy)
    with strategy.scope():  # its slots, as in preflight's estimate (taken after its one train step)
        prepared.model.optimizer.build(prepared.model.trainable_variables)
    estimate = estimate_memory(prepared.model, config.train.batch_size, traced=True).total_bytes
    prepared.model.fit(prepared.data.train, epochs=1, steps_per_epoch=args.steps, verbose=0)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    added = peak - before
    print(f"| text_gpt:{args.variant} ({prepared.model.count_params():,} parameters, batch {config.train.batch_size}, "
          f"{prepared.execution.precision}) | preflight estimate {estimate / GIB:.3f} GiB | training added "
          f"{added / GIB:.3f} GiB to {before / GIB:.3f} GiB (peak {peak / GIB:.3f} GiB) | estimate / added "
          f"{estimate / added:.2f} |")


if __name__ == "__main__":
    main()
