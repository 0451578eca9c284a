"""gpt: a decoder-only Transformer language model (next-token probabilities at every position).

Token embedding (spec.vocab_size), dropout, then model.num_layers pre-LayerNorm decoder blocks (causal
attention, then a feed-forward of ff_multiplier x embed_dim units whose activation is model.ff_activation: ReLU, or
GELU in float32 under any policy; each with dropout and a residual connection), a final LayerNormalization and a
float32 softmax over the vocabulary; with model.tie_embeddings the output projection is the token embedding
transposed.
model.positions: `learned` adds a position embedding (spec.input_shape[0] positions) and attends with Keras's
MultiHeadAttention(use_causal_mask=True); `rotary` rotates queries and keys by position (RoFormer, Su et al.
2021) and attends with keras.ops.dot_product_attention (is_causal=True), as MultiHeadAttention has no hook for it
(no dropout on the attention weights then).
Only Keras built-in layers and ops: model.keras loads with plain `keras.saving.load_model`.

Reads model.embed_dim, num_heads, num_layers, ff_multiplier, ff_activation (gelu | relu; absent: gelu), dropout,
tie_embeddings, positions.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import ml_collections
import numpy as np

from nntrain.data.spec import DatasetSpec
from nntrain.models import ADDED_KEYS, blocks, fields

POSITIONS = ("learned", "rotary")
FF_ACTIVATIONS = ("gelu", "relu")
ROTARY_BASE = 10_000.0


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """Next-token probabilities, shape (sequence_length, vocab_size), of int32 token ids of shape (sequence_length,)."""
    fields.require_input(spec, "gpt", "int32 token ids of shape (sequence_length,) and a vocab_size",
                         rank=1, token_ids=True)
    embed_dim, num_heads = fields.embed_dim_and_heads(model_config)
    num_layers = fields.positive_int(model_config, "num_layers")
    ff_dim = fields.positive_int(model_config, "ff_multiplier") * embed_dim
    dropout = fields.rate(model_config, "dropout")
    tie = fields.flag(model_config, "tie_embeddings")
    rotary = fields.choice(model_config, "positions", POSITIONS) == "rotary"
    ff_activation = _ff_activation(model_config)
    if rotary and (embed_dim // num_heads) % 2:
        raise fields.bad("embed_dim", embed_dim, f"rotary positions need an even size per head (embed_dim / "
                                                 f"num_heads = {embed_dim // num_heads}): change either")

    embedding = keras.layers.Embedding(spec.vocab_size, embed_dim, name="token_embedding")
    positions = keras.ops.cumsum(keras.ops.ones_like(inputs), axis=1) - 1  # 0..length-1, from built-in ops
    x = embedding(inputs)
    rotation = _rotation(positions, embed_dim // num_heads) if rotary else None

    def attend(y: keras.KerasTensor) -> keras.KerasTensor:
        if rotation is not None:
            return _rotary_attention(y, num_heads, rotation)
        return keras.layers.MultiHeadAttention(num_heads, key_dim=embed_dim // num_heads, dropout=dropout)(
            y, y, use_causal_mask=True)

    if not rotary:
        x = x + keras.layers.Embedding(spec.input_shape[0], embed_dim, name="position_embedding")(positions)
    x = blocks.dropout(x, dropout)
    for _ in range(num_layers):
        x = _decoder_block(x, attend, ff_dim, ff_activation, dropout)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    if tie:
        # The embedding looked up at ids 0..vocab_size-1 is its table, as a graph tensor: no custom layer needed.
        ones = keras.ops.ones_like(inputs[0, :1]) + keras.ops.zeros(spec.vocab_size, "int32")
        vocabulary = keras.ops.cumsum(ones) - 1
        logits = keras.ops.matmul(x, keras.ops.transpose(embedding(vocabulary)))
    else:
        logits = keras.layers.Dense(spec.vocab_size, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def _ff_activation(model_config: ml_collections.ConfigDict) -> str:
    """`model.ff_activation`; absent (a run saved before the key existed, or a config that does not set it): gelu,
    the only feed-forward those runs had, so that they rebuild the model they trained."""
    if "ff_activation" not in model_config:
        return ADDED_KEYS["gpt"]["ff_activation"]
    return fields.choice(model_config, "ff_activation", FF_ACTIVATIONS)


def _decoder_block(x: keras.KerasTensor, attend: Callable[[keras.KerasTensor], keras.KerasTensor], ff_dim: int,
                   ff_activation: str, dropout: float) -> keras.KerasTensor:
    x = x + blocks.dropout(attend(keras.layers.LayerNormalization()(x)), dropout)
    y = keras.layers.LayerNormalization()(x)
    y = keras.layers.Dense(ff_dim)(y)
    # Exact GELU in float32: its ~12 unfused elementwise ops (forward and backward) ran 2.2x slower in bfloat16 on
    # CPU without XLA, a quarter of a mixed_bfloat16 step of the default model (docs/language_model.md). ReLU is
    # one op each way and exact in any dtype: it stays in the compute dtype.
    y = keras.layers.Activation(ff_activation, dtype="float32" if ff_activation == "gelu" else None)(y)
    y = keras.layers.Dense(x.shape[-1])(y)
    return x + blocks.dropout(y, dropout)


def _rotation(positions: keras.KerasTensor, head_dim: int) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """cos and sin of position x frequency, (batch, length, 1, head_dim / 2): RoFormer's frequencies."""
    frequencies = (ROTARY_BASE ** -(np.arange(head_dim // 2) * 2 / head_dim)).astype("float32")
    angles = keras.ops.expand_dims(keras.ops.cast(positions, "float32"), -1) * frequencies
    return keras.ops.expand_dims(keras.ops.cos(angles), 2), keras.ops.expand_dims(keras.ops.sin(angles), 2)


def _rotary_attention(x: keras.KerasTensor, num_heads: int,
                      rotation: tuple[keras.KerasTensor, keras.KerasTensor]) -> keras.KerasTensor:
    """Causal multi-head self-attention whose queries and keys are rotated by their positions."""
    length, embed_dim = x.shape[1], x.shape[-1]
    head_dim = embed_dim // num_heads

    def project() -> keras.KerasTensor:
        return keras.layers.EinsumDense("blm,mhd->blhd", (length, num_heads, head_dim))(x)

    def rotate(t: keras.KerasTensor) -> keras.KerasTensor:
        cos, sin = (keras.ops.cast(r, t.dtype) for r in rotation)
        first, second = keras.ops.split(t, 2, axis=-1)
        return keras.ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)

    query, key, value = project(), project(), project()
    attended = keras.ops.dot_product_attention(rotate(query), rotate(key), value, is_causal=True)
    return keras.layers.EinsumDense("blhd,hdm->blm", (length, embed_dim))(attended)
