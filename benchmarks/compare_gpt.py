"""text_gpt's training steps against a hand-written plain Keras decoder of the same size, on the same batches.

  .venv/bin/python benchmarks/compare_gpt.py --steps=64 --repeats=3   # prints a markdown table

Both models are compiled with text_gpt's optimizer settings, steps_per_execution and jit_compile, and fitted on
the same distributed dataset (nntrain's text pipeline over the standard library's .py files), in one process.
Each repeat times both, in a rotated order, with nntrain.benchmark.throughput.time_model (warm-up executions,
then at least --steps steps). The plain decoder is what a Keras user writes by hand: a position-embedding layer
with keras.ops.arange, causal MultiHeadAttention blocks, a tied output layer and a from-logits loss. MFU uses the
FLOPs the TensorFlow profiler counts for nntrain's model for both (the same layers and matmuls) over the peak
matmul rate measured here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import keras

import nntrain
from nntrain.benchmark import flops, runner, throughput
from nntrain.distribute import strategies
from nntrain.run import trainer


class PositionEmbedding(keras.layers.Layer):
    def __init__(self, length: int, width: int, **kwargs):
        super().__init__(**kwargs)
        self.table = keras.layers.Embedding(length, width)

    def call(self, x):
        return x + self.table(keras.ops.arange(keras.ops.shape(x)[1]))


class TiedOutput(keras.layers.Layer):
    def __init__(self, embedding: keras.layers.Embedding, **kwargs):
        super().__init__(**kwargs)
        self.embedding = embedding

    def call(self, x):
        return keras.ops.matmul(x, keras.ops.transpose(self.embedding.embeddings))


def plain_decoder(vocab: int, length: int, width: int, heads: int, layers: int, ff: int) -> keras.Model:
    inputs = keras.Input((length,), dtype="int32")
    embedding = keras.layers.Embedding(vocab, width)
    x = PositionEmbedding(length, width)(embedding(inputs))
    for _ in range(layers):
        y = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.MultiHeadAttention(heads, width // heads)(y, y, use_causal_mask=True)
        y = keras.layers.LayerNormalization()(x)
        x = x + keras.layers.Dense(width)(keras.layers.Dense(ff, activation="gelu")(y))
    return keras.Model(inputs, TiedOutput(embedding)(keras.layers.LayerNormalization()(x)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    config = nntrain.load_config("text_gpt")
    strategy = strategies.create_strategy("auto")
    prepared = trainer.prepare(config, strategy)
    run, data, model_config = prepared.execution, prepared.data, config.model
    length = data.spec.input_shape[0]
    with strategy.scope():
        plain = plain_decoder(data.spec.vocab_size, length, model_config.embed_dim, model_config.num_heads,
                              model_config.num_layers, model_config.ff_multiplier * model_config.embed_dim)
        plain.compile(optimizer=keras.optimizers.AdamW(config.optimizer.learning_rate,
                                                       global_clipnorm=config.optimizer.global_clip_norm),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                      steps_per_execution=run.steps_per_execution, jit_compile=run.jit_compile)
    assert plain.count_params() == prepared.model.count_params(), (plain.count_params(), prepared.model.count_params())
    models = {"nntrain text_gpt": prepared.model, "plain Keras decoder": plain}
    rates: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        order = list(models) if repeat % 2 == 0 else list(reversed(models))
        for name in order:
            timing = throughput.time_model(models[name], data.train, run.steps_per_execution,
                                           runner.WARMUP_EXECUTIONS, args.steps)
            rates[name].append(data.global_batch_size * timing.timed_steps / timing.timed_seconds)
            print(f"{time.strftime('%H:%M:%S')} repeat {repeat + 1}: {name} {rates[name][-1]:.1f} examples/s",
                  file=sys.stderr, flush=True)
    features, labels = next(iter(data.train))
    per_example = flops.per_example(config, data.spec, features, labels)
    peak = flops.peak_matmul(strategy, strategies.accelerator(strategy), "float32").flops_per_second
    ratios = [a / b for a, b in zip(*rates.values())]
    print("| model | examples/s | tokens/s | MFU |\n|---|---|---|---|")
    for name, values in rates.items():
        rate = statistics.median(values)
        print(f"| {name} | {rate:.1f} | {rate * length:,.0f} | {per_example * rate / peak:.0%} |")
    print(f"\nnntrain / plain Keras: median {statistics.median(ratios):.3f} (per repeat: "
          f"{', '.join(f'{r:.3f}' for r in ratios)}); {args.repeats} repeats of {args.steps} timed steps, "
          f"global batch {data.global_batch_size} x {length} tokens, {run.precision}, steps_per_execution "
          f"{run.steps_per_execution}, jit_compile {run.jit_compile}; peak matmul {peak / 1e9:.1f} GFLOP/s, "
          f"{per_example / 1e6:.0f} MFLOP/example")


if __name__ == "__main__":
    main()
