"""Text from a byte-level gpt model: a batch of prompts in, sampled continuations out, all in the graph.

Prompts are tokenized as training tokenizes a file's start (`text.prompt_window`: END_OF_FILE, then the bytes),
right-padded to the context. The window is prefilled once (`gpt_decoding.Decoder`), then every row advances one
position per cached step, in lockstep from the shortest prompt on: a row whose prompt is longer keeps its own
bytes until they end (as KerasHub's samplers do). The per-token loop is an XLA-compiled `tf.while_loop`.
When the window is full, it slides: the last 3/4 of the context stay, are prefilled again, and decoding goes on,
so a prompt plus its continuation may be longer than the context (each token then sees between 3/4 and all of a
context of text before it).

Each token is drawn from the model's next-token logits / `temperature`, among the `top_k` most likely (0: all)
whose probabilities before it sum to less than `top_p` (1: all), by the Gumbel-max trick with uniforms from
`tf.random.stateless_uniform` seeded by (`seed`, position), the same for every row: the same seed gives a prompt
the same text, from a run or from its export, whatever else is in the batch. `top_k=1` is greedy decoding. A row
stops at END_OF_FILE or after `max_new_tokens`.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import tensorflow as tf

from nntrain.data import text
from nntrain.models.gpt_decoding import Decoder

KEEP_WHEN_SLIDING = 0.75  # of the context, when the window is full
PHILOX = "philox"  # the same uniforms with or without XLA, on every device

Sampler = Callable[..., tf.Tensor]


def sampler(model: keras.Model) -> Sampler:
    """sample(prompts (batch,) tf.string, max_new_tokens, temperature, top_k, top_p, seed) -> (batch,) tf.string
    continuations, for a byte-level gpt model."""
    decoder = Decoder(model)
    context = decoder.context
    keep = max(1, int(context * KEEP_WHEN_SLIDING))
    byte_strings = tf.constant([bytes([value]) for value in range(text.END_OF_FILE)] + [b""])

    @tf.function(jit_compile=True, autograph=False)
    def advance(window, lengths, done, index, stop, temperature, top_k, top_p, seed, offset):
        """Prefills `window`, then fills positions index..stop-1 (or until every row is done); returns the
        window, the rows that drew END_OF_FILE and the position reached. `offset`: the window's first position
        in the text, for the seeds."""
        logits, cache = decoder.prefill(window)
        logits = tf.gather(logits, index - 1, axis=1)

        def body(window, done, index, logits, cache):
            drawn = _draw(logits, temperature, top_k, top_p, tf.stack([seed, offset + index]))
            prompt = tf.gather(window, index, axis=1)
            token = tf.where(index < lengths, prompt, drawn)
            done = done | ((index >= lengths) & (drawn == text.END_OF_FILE))
            window = _put(window, token, index)
            logits, cache = decoder.step(token, index, cache)
            return window, done, index + 1, logits, cache

        window, done, index, _, _ = tf.while_loop(
            lambda window, done, index, logits, cache: (index < stop) & ~tf.reduce_all(done),
            body, (window, done, index, logits, cache))
        return window, done, index

    def sample(prompts: tf.Tensor, max_new_tokens: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
               top_p: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
        window, lengths = text.prompt_window(prompts, context)
        temperature, top_p = (tf.cast(v, tf.float32) for v in (temperature, top_p))
        top_k, seed, max_new_tokens = (tf.cast(v, tf.int32) for v in (top_k, seed, max_new_tokens))
        start = tf.reduce_min(lengths)
        end = tf.reduce_max(lengths) + max_new_tokens  # in the text's positions
        done = tf.zeros_like(lengths, tf.bool)
        drawn = tf.zeros([tf.shape(window)[0], 0], tf.int32)  # positions start.. of the text, in lockstep
        index, offset = start, tf.constant(0)

        def chunk(window, lengths, done, drawn, index, offset):
            slide = index >= context
            shift = tf.where(slide, context - keep, 0)
            window = tf.roll(window, -shift, axis=1)  # what comes round to the end is written before it is read
            index, offset, lengths = index - shift, offset + shift, tf.maximum(lengths - shift, 1)
            stop = tf.minimum(context, end - offset)
            window, done, reached = advance(window, lengths, done, index, stop, temperature, top_k, top_p, seed,
                                            offset)
            return window, lengths, done, tf.concat([drawn, window[:, index:reached]], 1), reached, offset

        _, _, _, drawn, _, _ = tf.while_loop(
            lambda window, lengths, done, drawn, index, offset: (offset + index < end) & ~tf.reduce_all(done),
            chunk, (window, lengths, done, drawn, index, offset),
            shape_invariants=(window.shape, lengths.shape, done.shape, tf.TensorShape([None, None]),
                              tf.TensorShape([]), tf.TensorShape([])))
        return _continuations(drawn, lengths - start, max_new_tokens, byte_strings)

    return sample


def _draw(logits: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor, top_p: tf.Tensor,
          seed: tf.Tensor) -> tf.Tensor:
    """One token per row (int32): Gumbel-max over logits / temperature restricted to top-k and top-p."""
    logits = logits / temperature
    ranked = tf.sort(logits, direction="DESCENDING")
    vocab = tf.shape(logits)[-1]
    k = tf.where((top_k > 0) & (top_k < vocab), top_k, vocab)
    probabilities = tf.nn.softmax(ranked)
    nucleus = tf.cumsum(probabilities, axis=-1, exclusive=True) < top_p  # always keeps the most likely
    kept = tf.minimum(k, tf.reduce_sum(tf.cast(nucleus, tf.int32), axis=-1, keepdims=True))
    threshold = tf.gather(ranked, kept - 1, batch_dims=1)
    logits = tf.where(logits >= threshold, logits, float("-inf"))
    # One row of noise for the whole batch: a prompt's text depends on its seed only, not on its batch.
    uniform = tf.random.stateless_uniform(tf.shape(logits)[-1:], seed, minval=1e-20, maxval=1.0, alg=PHILOX)
    return tf.cast(tf.argmax(logits - tf.math.log(-tf.math.log(uniform)), axis=-1), tf.int32)


def _put(window: tf.Tensor, token: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    at = tf.one_hot(index, tf.shape(window)[1], on_value=True, off_value=False)[None]
    return tf.where(at, token[:, None], window)


def _continuations(drawn: tf.Tensor, skip: tf.Tensor, max_new_tokens: tf.Tensor, byte_strings: tf.Tensor) -> tf.Tensor:
    """Each row's new bytes as a string: after its own prompt (`skip` of the lockstep positions), at most
    max_new_tokens, up to its first END_OF_FILE."""
    width = tf.shape(drawn)[1]
    new = tf.range(width)[None]  # the row's new tokens 0, 1, ...
    padded = tf.pad(drawn, [[0, 0], [0, 1]], constant_values=text.END_OF_FILE)
    tokens = tf.gather(padded, tf.minimum(new + skip[:, None], width), batch_dims=1)
    ended = tf.cumsum(tf.cast(tokens == text.END_OF_FILE, tf.int32), axis=1) > 0
    tokens = tf.where((new < max_new_tokens) & ~ended, tokens, text.END_OF_FILE)
    return tf.strings.reduce_join(tf.gather(byte_strings, tokens), axis=1)
