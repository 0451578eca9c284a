"""Key/value-cached decoding: the next-token probabilities of a prefill and of cached steps equal the full model's."""

import keras
import ml_collections
import numpy as np
import pytest
import tensorflow as tf

from nntrain.data.spec import DatasetSpec
from nntrain.models import gpt
from nntrain.models.gpt_decoding import Decoder

CONTEXT = 12


def tiny_gpt(positions: str = "learned", tie: bool = True, context: int = CONTEXT, seed: int = 0,
             ff_activation: str = "gelu", fused_qkv: bool = False) -> keras.Model:
    """A randomly initialised gpt of 2 blocks, 16 wide, over the 257 byte-level tokens."""
    keras.utils.set_random_seed(seed)
    spec = DatasetSpec((context,), "int32", 257, 100, vocab_size=257)
    config = ml_collections.ConfigDict({"embed_dim": 16, "num_heads": 2, "num_layers": 2, "ff_multiplier": 4,
                                        "dropout": 0.0, "tie_embeddings": tie, "positions": positions,
                                        "ff_activation": ff_activation, "fused_qkv": fused_qkv})
    inputs = keras.Input((context,), dtype="int32")
    return keras.Model(inputs, gpt.build(inputs, config, spec))


@pytest.mark.parametrize("positions, tie, ff_activation, fused_qkv", [
    ("learned", True, "gelu", False), ("learned", False, "relu", False), ("rotary", True, "relu", False),
    ("learned", True, "relu", True), ("rotary", False, "gelu", True)])
def test_cached_and_uncached_next_token_probabilities_agree(positions, tie, ff_activation, fused_qkv):
    model = tiny_gpt(positions, tie, ff_activation=ff_activation, fused_qkv=fused_qkv)
    tokens = np.random.default_rng(1).integers(0, 257, (3, CONTEXT)).astype("int32")
    full = model(tokens).numpy()
    decoder = Decoder(model)
    logits, _ = decoder.prefill(tf.constant(tokens))
    assert np.abs(tf.nn.softmax(logits).numpy() - full).max() <= 1e-5
    prompt = 4  # prefill the first 4 tokens (the rest is padding the causal mask hides), then one step at a time
    _, cache = decoder.prefill(tf.constant(np.where(np.arange(CONTEXT) < prompt, tokens, 0).astype("int32")))
    for index in range(prompt, CONTEXT):
        logits, cache = decoder.step(tf.constant(tokens[:, index]), tf.constant(index), cache)
        assert np.abs(tf.nn.softmax(logits).numpy() - full[:, index]).max() <= 1e-5, index


def test_cache_keeps_the_compute_dtype():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    logits, cache = Decoder(tiny_gpt(fused_qkv=True)).prefill(tf.zeros((3, CONTEXT), tf.int32))
    assert logits.dtype == tf.float32 and logits.shape == (3, CONTEXT, 257)
    assert cache.dtype == tf.bfloat16 and cache.shape == (2, 2, 3, CONTEXT, 2, 8)  # layers, k/v, batch, ...
