"""text_gpt against the decoder a Keras user builds with KerasHub, side by side in one process, alternating.

  .venv/bin/python benchmarks/compare_gpt.py --variant=default --steps=64 --repeats=5 --matched  # training tokens/s
  .venv/bin/python benchmarks/compare_gpt.py --variant=default --generate --run=runs/text_gpt   # new tokens/s

keras-hub is a benchmark extra (`pip install --no-deps keras-hub regex tokenizers`), never a runtime dependency.

Training: keras.io's "miniature GPT" (`keras_hub.layers.TokenAndPositionEmbedding` + `TransformerDecoder` blocks,
post-norm ReLU, an untied Dense output on logits) at the variant's width, depth, heads, feed-forward width and
context, compiled with text_gpt's optimizer, steps_per_execution and jit_compile, fitted on the same distributed
dataset (nntrain's text pipeline). Three sides: nntrain at precision=auto, KerasHub at that precision, KerasHub
in float32; --matched adds a fourth, KerasHub at precision=auto with activation="gelu" (the peer as text_gpt's
architecture would have it, where the others are the peer as keras.io writes it, ReLU); --set KEY=VALUE overrides
the nntrain side's config (e.g. model.ff_activation=gelu); --also KEY=VALUE adds an nntrain side with that override
too (e.g. model.fused_qkv=false: the model before, in the same run). Each repeat times every side in a rotated order
(nntrain.benchmark.throughput.time_model: warm-up executions, then at least --steps steps), by wall time and by
the process's CPU time: on a shared machine the wall time of a side depends on what other processes ran during it,
its CPU time much less.

Generation (--generate): `nntrain generate`'s sampler on the run's model (--run, a text_gpt run of the variant)
against KerasHub's cached sampler (`GPT2CausalLM.generate`, a GPT2Backbone of the same size: pre-norm GELU, tied,
the same precision; KerasHub compiles its loop with XLA too), both top-k 40, one prompt: new tokens/s within the
context, warm (the first call, which compiles, is not timed); then nntrain alone for --new_tokens past the context.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import time

import keras
import keras_hub
import numpy as np
import tensorflow as tf

import nntrain
from nntrain.benchmark import throughput
from nntrain.benchmark.runner import WARMUP_EXECUTIONS
from nntrain.data import text
from nntrain.distribute import strategies
from nntrain.exports import artifacts, sampling
from nntrain.run import trainer

PROMPT = b"def "


def keras_hub_decoder(config, vocab: int, length: int, activation: str) -> keras.Model:
    """keras.io's miniature GPT at the config's size, from logits."""
    model = config.model
    inputs = keras.Input((length,), dtype="int32")
    x = keras_hub.layers.TokenAndPositionEmbedding(vocab, length, model.embed_dim)(inputs)
    for _ in range(model.num_layers):
        x = keras_hub.layers.TransformerDecoder(model.ff_multiplier * model.embed_dim, model.num_heads,
                                                   activation=activation)(x)
    return keras.Model(inputs, keras.layers.Dense(vocab)(x))


def train_side(config, vocab: int, length: int, precision: str, run, strategy, activation: str = "relu"
               ) -> keras.Model:
    keras.mixed_precision.set_global_policy(precision)
    with strategy.scope():
        model = keras_hub_decoder(config, vocab, length, activation)
        model.compile(optimizer=keras.optimizers.AdamW(config.optimizer.learning_rate,
                                                       global_clipnorm=config.optimizer.global_clip_norm),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"],
                      steps_per_execution=run.steps_per_execution, jit_compile=run.jit_compile)
    return model


def compare_training(config, args) -> None:
    strategy = strategies.create_strategy("cpu")
    prepared = trainer.prepare(config, strategy)
    run, data = prepared.execution, prepared.data
    length, vocab = data.spec.input_shape[0], data.spec.vocab_size
    models = {f"nntrain text_gpt ({run.precision})": prepared.model,
              f"KerasHub decoder ({run.precision})": train_side(config, vocab, length, run.precision, run, strategy),
              "KerasHub decoder (float32)": train_side(config, vocab, length, "float32", run, strategy)}
    for override in args.also:
        other = nntrain.load_config(f"text_gpt:{args.variant}", [*_overrides(args.set), *_overrides([override])])
        models[f"nntrain text_gpt ({override})"] = trainer.prepare(other, strategy).model
    if args.matched:
        models[f"KerasHub decoder, GELU ({run.precision})"] = train_side(config, vocab, length, run.precision, run,
                                                                         strategy, "gelu")
    keras.mixed_precision.set_global_policy(run.precision)
    params = {name: model.count_params() for name, model in models.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}  # tokens per wall second
    cpu_rates: dict[str, list[float]] = {name: [] for name in models}  # tokens per process CPU second
    names = list(models)
    for repeat in range(args.repeats):
        order = names[repeat % len(names):] + names[:repeat % len(names)]
        for name in order:
            timing = throughput.time_model(models[name], data.train, run.steps_per_execution, WARMUP_EXECUTIONS,
                                           args.steps)
            tokens = data.global_batch_size * length * timing.timed_steps
            rates[name].append(tokens / timing.timed_seconds)
            cpu_rates[name].append(tokens / timing.timed_cpu_seconds)
            print(f"{time.strftime('%H:%M:%S')} repeat {repeat + 1}: {name} {rates[name][-1]:,.0f} tokens/s, "
                  f"{cpu_rates[name][-1]:,.0f} tokens per CPU s", file=sys.stderr, flush=True)
    print(f"| {config.experiment} | parameters | tokens/s (median) | nntrain / it (median of repeats) | "
          "tokens per CPU s (median) | nntrain / it, per CPU s |")
    print("|---|---|---|---|---|---|")

    def ratios(side: dict[str, list[float]], name: str) -> str:
        each = [a / b for a, b in zip(side[names[0]], side[name])]
        return f"{statistics.median(each):.2f} ({', '.join(f'{r:.2f}' for r in each)})"

    for name in names:
        print(f"| {name} | {params[name]:,} | {statistics.median(rates[name]):,.0f} | {ratios(rates, name)} | "
              f"{statistics.median(cpu_rates[name]):,.0f} | {ratios(cpu_rates, name)} |")
    print(f"\n{args.repeats} repeats of >= {args.steps} timed steps per side, rotated; global batch "
          f"{data.global_batch_size} x {length} tokens; steps_per_execution {run.steps_per_execution}, jit_compile "
          f"{run.jit_compile}; precision=auto gave {run.precision} ({run.why_precision}); nntrain's feed-forward "
          f"activation {config.model.get('ff_activation', 'gelu')}, fused_qkv {config.model.get('fused_qkv', False)}")


def keras_hub_causal_lm(config, length: int, precision: str) -> keras_hub.models.GPT2CausalLM:
    model = config.model
    keras.mixed_precision.set_global_policy(precision)
    backbone = keras_hub.models.GPT2Backbone(vocabulary_size=text.VOCAB_SIZE, num_layers=model.num_layers,
                                             num_heads=model.num_heads, hidden_dim=model.embed_dim,
                                             intermediate_dim=model.ff_multiplier * model.embed_dim, dropout=0.0,
                                             max_sequence_length=length)
    causal_lm = keras_hub.models.GPT2CausalLM(backbone, preprocessor=None)
    causal_lm.compile(sampler=keras_hub.samplers.TopKSampler(k=40, seed=0))
    return causal_lm


def compare_generation(config, args) -> None:
    model = artifacts.load_model(args.run, "final")
    length = int(model.input_shape[1])
    precision = model.get_layer("final_norm").dtype_policy.name
    generate = tf.function(sampling.sampler(model), autograph=False)
    hub = keras_hub_causal_lm(config, length, precision)
    prompt = [text.END_OF_FILE, *PROMPT]
    new = length - len(prompt)  # what fits in the context: KerasHub generates up to its max_length
    hub_inputs = {"token_ids": np.array([prompt + [0] * new], np.int32),
                  "padding_mask": np.array([[True] * len(prompt) + [False] * new])}

    def ours(tokens: int, seed: int) -> int:
        texts = generate(tf.constant([PROMPT]), tf.constant(tokens), tf.constant(1.0), tf.constant(40),
                         tf.constant(1.0), tf.constant(seed))
        return len(texts.numpy()[0])

    def theirs(tokens: int, seed: int) -> int:
        out = hub.generate(hub_inputs, stop_token_ids=None)
        return int(out["padding_mask"].sum()) - len(prompt)

    sides = {"nntrain sampler": ours, "KerasHub GPT2CausalLM.generate": theirs}
    for side in sides.values():  # compiles
        side(new, 0)
    rates: dict[str, list[float]] = {name: [] for name in sides}
    for repeat, name in itertools.product(range(args.repeats), sides):
        start = time.perf_counter()
        produced = sides[name](new, repeat)
        rates[name].append(produced / (time.perf_counter() - start))
        print(f"{time.strftime('%H:%M:%S')} {name}: {produced} new tokens, {rates[name][-1]:,.0f} tokens/s",
              file=sys.stderr, flush=True)
    long_rates = []
    for seed in range(args.repeats):
        start = time.perf_counter()
        produced = ours(args.new_tokens, seed)
        long_rates.append(produced / (time.perf_counter() - start))
        print(f"{time.strftime('%H:%M:%S')} nntrain past the context: {produced} new tokens, "
              f"{long_rates[-1]:,.0f} tokens/s", file=sys.stderr, flush=True)
    print(f"| generation, {config.experiment}, {precision}, batch 1, top-k 40 | new tokens/s (median) |")
    print("|---|---|")
    for name, values in rates.items():
        print(f"| {name}, {new} new tokens in a context of {length} | {statistics.median(values):,.0f} |")
    print(f"| nntrain sampler, up to {args.new_tokens} new tokens (window sliding) | "
          f"{statistics.median(long_rates):,.0f} |")
    print(f"\n{args.repeats} warm calls per side, alternating; nntrain / KerasHub: "
          f"{statistics.median(rates['nntrain sampler']) / statistics.median(rates[list(sides)[1]]):.2f}")


def _overrides(items: list[str]) -> list[list[str]]:
    return [item.split("=", 1) for item in items]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="default")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--matched", action="store_true", help="add KerasHub's decoder with GELU as a side")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override of the nntrain side, e.g. model.ff_activation=gelu")
    parser.add_argument("--also", action="append", default=[], metavar="KEY=VALUE",
                        help="an extra nntrain side with this config override, e.g. model.fused_qkv=false")
    parser.add_argument("--generate", action="store_true", help="compare generation instead of training")
    parser.add_argument("--run", help="--generate: a text_gpt run of --variant")
    parser.add_argument("--new_tokens", type=int, default=1000)
    args = parser.parse_args()
    config = nntrain.load_config(f"text_gpt:{args.variant}", _overrides(args.set))
    if args.generate:
        compare_generation(config, args)
    else:
        compare_training(config, args)


if __name__ == "__main__":
    main()
