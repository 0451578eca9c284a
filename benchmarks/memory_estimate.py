"""preflight's memory estimate against the memory a text_gpt variant's training takes on this CPU.

  .venv/bin/python benchmarks/memory_estimate.py --variant=small --steps=16

The estimate (run.guards.estimate_memory, what `nntrain preflight` reports per replica) is taken at the variant's
whole batch on one device. It is set against two peaks measured while the model is built and trained (`fit` for
--steps steps):
- TensorFlow's allocator peak (`tf.config.experimental.get_memory_info`, the figure it reports for a GPU or TPU's
  memory): the most bytes of tensors and variables alive at once (weights, gradients, slots, activations, the
  input pipeline's batches). This is what the estimate models.
- the process's peak resident memory minus its resident memory just before the model and data were built: also
  TensorFlow's traced graphs and kernels, oneDNN's caches and what malloc keeps after a free.
"""

from __future__ import annotations

import argparse
import resource

import tensorflow as tf

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
    tf.config.experimental.reset_memory_stats("CPU:0")
    prepared = trainer.prepare(config, strategy)
    estimate = estimate_memory(prepared.model, config.train.batch_size, traced=True).total_bytes
    prepared.model.fit(prepared.data.train, epochs=1, steps_per_epoch=args.steps, verbose=0)
    allocated = tf.config.experimental.get_memory_info("CPU:0")["peak"]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    added = peak - before
    print(f"| text_gpt:{args.variant} ({prepared.model.count_params():,} parameters, batch {config.train.batch_size}, "
          f"{prepared.execution.precision}) | preflight estimate {estimate / GIB:.3f} GiB | allocator peak "
          f"{allocated / GIB:.3f} GiB | estimate / allocator peak **{estimate / allocated:.2f}** | resident memory "
          f"added {added / GIB:.3f} GiB to {before / GIB:.3f} GiB (peak {peak / GIB:.3f} GiB) | estimate / added "
          f"{estimate / added:.2f} |")


if __name__ == "__main__":
    main()
