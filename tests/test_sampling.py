"""The compiled sampler: greedy decoding equals the full model's argmax, also past the context (the window
slides); batched prompts give each row its own text; seeds; top-k, top-p and temperature."""

import numpy as np
import pytest
import tensorflow as tf
from test_gpt_decoding import tiny_gpt

from nntrain.data import text
from nntrain.exports import sampling

CONTEXT = 8


def no_end_of_file(model):
    """The model with END_OF_FILE made unlikely (its untied output bias), so that texts run long."""
    bias = model.get_layer("logits").bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[text.END_OF_FILE]], [-1e4]))
    return model


def reference_greedy(model, prompt: bytes, new: int) -> bytes:
    """Greedy text from full forward passes over the window the sampler sees: when the window is full it keeps
    its last 3/4 (the sampler's rule), written out."""
    stream, offset = [text.END_OF_FILE, *prompt], 0
    start, keep = len(stream), int(CONTEXT * sampling.KEEP_WHEN_SLIDING)
    for _ in range(new):
        if len(stream) - offset == CONTEXT:
            offset += CONTEXT - keep
        window = stream[offset:] + [0] * (CONTEXT - len(stream) + offset)
        probabilities = model(np.array([window], np.int32)).numpy()[0, len(stream) - offset - 1]
        stream.append(int(probabilities.argmax()))
    return bytes(stream[start:])


SAMPLERS = {}


def sample(model, prompts, max_new_tokens, temperature=1.0, top_k=0, top_p=1.0, seed=0):
    """The sampler's texts (traced once per model; XLA compiles once per batch size)."""
    if model not in SAMPLERS:
        SAMPLERS[model] = tf.function(sampling.sampler(model), autograph=False)
    texts = SAMPLERS[model](tf.constant(prompts), tf.constant(max_new_tokens), tf.constant(temperature),
                            tf.constant(top_k), tf.constant(top_p), tf.constant(seed))
    return texts.numpy().tolist()


def test_greedy_past_the_context_equals_full_forward_passes():
    model = no_end_of_file(tiny_gpt(tie=False, context=CONTEXT))
    for prompt in (b"", b"ab", b"abcdef"):
        expected = reference_greedy(model, prompt, 20)
        assert len(expected) == 20
        assert sample(model, [prompt], 20, top_k=1) == [expected], prompt
        assert sample(model, [prompt], 20, top_p=1e-6) == [expected], prompt  # the nucleus of one token


def test_batched_prompts_each_get_their_own_text():
    model = no_end_of_file(tiny_gpt(tie=False, context=CONTEXT, seed=3))
    prompts = [b"x", b"hello", b"", b"\xff\xfe\x00abc"]
    batched = sample(model, prompts, 15, seed=5)
    assert batched == [sample(model, [prompt], 15, seed=5)[0] for prompt in prompts]
    assert [len(t) for t in batched] == [15] * 4
    assert sample(model, prompts, 15, top_k=1) == [reference_greedy(model, p, 15) for p in prompts]


def test_seeds():
    model = no_end_of_file(tiny_gpt(tie=False, context=CONTEXT))
    first = sample(model, [b"ab"], 12, seed=1)
    assert first == sample(model, [b"ab"], 12, seed=1)
    assert len({tuple(sample(model, [b"ab"], 12, seed=seed)) for seed in range(4)}) > 1


def test_end_of_file_ends_a_row():
    model = tiny_gpt(tie=False, context=CONTEXT)
    bias = model.get_layer("logits").bias
    bias.assign(tf.tensor_scatter_nd_update(bias, [[text.END_OF_FILE]], [1e4]))  # always the end
    assert sample(model, [b"a", b"bc"], 10) == [b"", b""]


def draws(probabilities, seeds=400, temperature=1.0, top_k=0, top_p=1.0):
    """The tokens drawn from one distribution with seeds 0..seeds-1."""
    logits = tf.math.log(tf.constant([probabilities], tf.float32))
    rules = tf.constant(temperature), tf.constant(top_k), tf.constant(top_p)
    drawn = tf.function(lambda: tf.map_fn(lambda seed: sampling._draw(logits, *rules, tf.stack([seed, 0]))[0],
                                          tf.range(seeds)))()
    return drawn.numpy().tolist()


@pytest.mark.fast
def test_top_k_top_p_and_temperature_shape_the_distribution():
    probabilities = [0.5, 0.3, 0.15, 0.05]
    plain = draws(probabilities)
    assert set(plain) == {0, 1, 2, 3} and 150 < plain.count(0) < 250  # the model's own distribution
    assert set(draws(probabilities, top_k=1)) == {0}
    assert set(draws(probabilities, top_k=2)) == {0, 1}
    assert set(draws(probabilities, top_p=0.6)) == {0, 1}  # 0.5 before the second: below 0.6, kept
    assert set(draws(probabilities, top_p=0.9)) == {0, 1, 2}
    assert set(draws(probabilities, top_k=2, top_p=0.9)) == {0, 1}
    assert draws(probabilities, temperature=0.05).count(0) > 390  # near-greedy when cold
