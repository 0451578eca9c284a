"""CPU milliseconds of one forward and backward pass of each part of a text_gpt decoder block, per precision.

  .venv/bin/python benchmarks/gpt_block_cost.py --variant=default --repeats=5

Where a training step of text_gpt goes without XLA: the feed-forward with exact GELU in the compute dtype (as gpt
built it before), with GELU in float32 (as it builds it now), with ReLU (keras.io's miniature GPT, the KerasHub
peer of benchmarks/compare_gpt.py), the causal attention and a LayerNormalization, each at the variant's batch,
context and width, on the same random activations. Process CPU time, not wall time, so that the load of other
processes counts less; each repeat times every part in turn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import tensorflow as tf

import nntrain

CALLS = 20  # per part and repeat


def parts(length: int, width: int, heads: int, ff_dim: int) -> dict:
    def feed_forward(activation: str, gelu_dtype: str | None = None):
        def part(x):
            y = keras.layers.Dense(ff_dim, activation=None if gelu_dtype else activation)(
                keras.layers.LayerNormalization()(x))
            if gelu_dtype:
                y = keras.layers.Activation(activation, dtype=gelu_dtype)(y)
            return x + keras.layers.Dense(width)(y)
        return part

    def attention(x):
        y = keras.layers.LayerNormalization()(x)
        return x + keras.layers.MultiHeadAttention(heads, width // heads)(y, y, use_causal_mask=True)

    built = {"feed-forward, GELU in the compute dtype (gpt before Dec 7)": feed_forward("gelu"),
             "feed-forward, GELU in float32 (gpt, ff_activation=gelu)": feed_forward("gelu", "float32"),
             "feed-forward, ReLU (gpt's default; the KerasHub peer)": feed_forward("relu"),
             "causal attention (MultiHeadAttention)": attention,
             "LayerNormalization": lambda x: keras.layers.LayerNormalization()(x)}
    models = {}
    for name, part in built.items():
        inputs = keras.Input((length, width))
        models[name] = keras.Model(inputs, part(inputs))
    return models


def step(model: keras.Model):
    @tf.function
    def forward_backward(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(tf.cast(model(x), tf.float32) ** 2)
        return tape.gradient(loss, model.trainable_variables)
    return forward_backward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    config = nntrain.load_config(f"text_gpt:{args.variant}")
    model = config.model
    length, batch = config.data.sequence_length, config.train.batch_size
    shape = (length, model.embed_dim, model.num_heads, model.ff_multiplier * model.embed_dim)
    x = tf.random.normal((batch, length, model.embed_dim), seed=0)
    table = {}
    for precision in ("mixed_bfloat16", "float32"):
        keras.mixed_precision.set_global_policy(precision)
        steps = {name: step(part) for name, part in parts(*shape).items()}
        for fn in steps.values():
            fn(x)  # traces
        times: dict[str, list[float]] = {name: [] for name in steps}
        for _ in range(args.repeats):
            for name, fn in steps.items():
                start = time.process_time()
                for _ in range(CALLS):
                    grads = fn(x)
                grads[0].numpy()
                times[name].append((time.process_time() - start) / CALLS * 1000)
        for name, values in times.items():
            table.setdefault(name, {})[precision] = statistics.median(values)
    print(f"| text_gpt:{args.variant}, batch {batch} x {length}, width {model.embed_dim}, forward + backward "
          "| CPU ms, mixed_bfloat16 | CPU ms, float32 |")
    print("|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {row['mixed_bfloat16']:.1f} | {row['float32']:.1f} |")
    print(f"\nmedian of {args.repeats} repeats of {CALLS} calls, no XLA")


if __name__ == "__main__":
    main()
