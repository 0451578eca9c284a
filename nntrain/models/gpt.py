"""gpt: a decoder-only Transformer language model (next-token probabilities at every position).

Token embedding (spec.vocab_size), dropout, then model.num_layers pre-LayerNorm decoder blocks (causal
attention, then a feed-forward of ff_multiplier x embed_dim units whose activation is model.ff_activation: ReLU, or
GELU in float32 under any policy; each with dropout and a residual connection), a final LayerNormalization and a
float32 softmax over the vocabulary; with model.tie_embeddings the output projection is the token embedding
transposed.
model.fused_qkv: queries, keys and values come from one projection, an EinsumDense to (3, heads, head_dim) (GPT-2's
layout), and the attention is written out here: the causal mask is an additive float32 bias made once per step, the
softmax runs in float32, attention dropout as MultiHeadAttention's. Off (runs saved before the key, and text_gpt's
default): separate projections, Keras's MultiHeadAttention(use_causal_mask=True), its attention computed by
compat.keras_causal_attention (the same function in fewer ops). Fused, a mixed_bfloat16 step of the default
text_gpt takes ~2% less CPU (fewer, larger matmuls, fewer variables to update; ~11% before the separate model's
attention was written out too), but it trained to 0.45-2.2% more val bits per byte after 600 steps in bfloat16, in
each of 8 runs over 4 seeds, also with bias gradients summed in float32 (the same function: equal to 4 decimals
after 100 float32 steps from the same weights; docs/benchmarks.md).
model.positions: `learned` adds a position embedding (spec.input_shape[0] positions); `rotary` rotates queries
and keys by position (RoFormer, Su et al. 2021); unfused it attends with keras.ops.dot_product_attention
(is_causal=True), as MultiHeadAttention has no hook for it (no dropout on the attention weights then).
Only Keras built-in layers and ops: model.keras loads with plain `keras.saving.load_model`.

Reads model.embed_dim, num_heads, num_layers, ff_multiplier, ff_activation (gelu | relu; absent: gelu), fused_qkv
(absent: false), dropout, tie_embeddings, positions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import ml_collections
import numpy as np

from nntrain.compat import keras_causal_attention, keras_layer_norm
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
    ff_activation = _added(model_config, "ff_activation", lambda: fields.choice(model_config, "ff_activation",
                                                                                FF_ACTIVATIONS))
    fused = _added(model_config, "fused_qkv", lambda: fields.flag(model_config, "fused_qkv"))
    if rotary and (embed_dim // num_heads) % 2:
        raise fields.bad("embed_dim", embed_dim, f"rotary positions need an even size per head (embed_dim / "
                                                 f"num_heads = {embed_dim // num_heads}): change either")

    embedding = keras.layers.Embedding(spec.vocab_size, embed_dim, name="token_embedding")
    # 0..length-1 of shape (1, length), from built-in ops: one row looked up and broadcast over the batch, so the
    # position embedding's gradient is 1 x length rows, not batch x length to scatter-add (twice a step)
    positions = keras.ops.expand_dims(keras.ops.cumsum(keras.ops.ones_like(inputs[0])) - 1, 0)
    x = embedding(inputs)
    # The heads axis: 1 in the fused attention's (batch, heads, length, head_dim), 2 in (batch, length, heads, ...).
    rotation = _rotation(positions, embed_dim // num_heads, 1 if fused else 2) if rotary else None

    def attend(y: keras.KerasTensor) -> keras.KerasTensor:
        if fused:
            return _fused_attention(y, num_heads, positions, rotation, dropout)
        if rotation is not None:
            return _rotary_attention(y, num_heads, rotation)
        # Keras's layer, its causal attention written out (compat.keras_causal_attention: the same function)
        attention = keras.layers.MultiHeadAttention(num_heads, key_dim=embed_dim // num_heads, dropout=dropout)
        return keras_causal_attention.written_out(attention)(y, y, use_causal_mask=True)

    if not rotary:
        x = x + keras.layers.Embedding(spec.input_shape[0], embed_dim, name="position_embedding")(positions)
    x = blocks.dropout(x, dropout)
    for _ in range(num_layers):
        x = _decoder_block(x, attend, ff_dim, ff_activation, dropout)
    x = _layer_norm(name="final_norm")(x)
    if tie:
        # The embedding looked up at ids 0..vocab_size-1 is its table, as a graph tensor: no custom layer needed.
        ones = keras.ops.ones_like(inputs[0, :1]) + keras.ops.zeros(spec.vocab_size, "int32")
        vocabulary = keras.ops.cumsum(ones) - 1
        logits = keras.ops.matmul(x, keras.ops.transpose(embedding(vocabulary)))
    else:
        logits = keras.layers.Dense(spec.vocab_size, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def _added(model_config: ml_collections.ConfigDict, key: str, read: Callable[[], Any]) -> Any:
    """`model.KEY`, a key gpt gained after runs were saved, read by `read`; absent (such a run, or a config that
    does not set it): what those runs had (models.ADDED_KEYS), so that they rebuild the model they trained."""
    return read() if key in model_config else ADDED_KEYS["gpt"][key]


def _layer_norm(name: str | None = None) -> keras.layers.LayerNormalization:
    """Keras's LayerNormalization, its gradient written out (compat.keras_layer_norm: the same function, fewer ops)."""
    return keras_layer_norm.written_out_gradient(keras.layers.LayerNormalization(name=name))


def _decoder_block(x: keras.KerasTensor, attend: Callable[[keras.KerasTensor], keras.KerasTensor], ff_dim: int,
                   ff_activation: str, dropout: float) -> keras.KerasTensor:
    x = x + blocks.dropout(attend(_layer_norm()(x)), dropout)
    y = _layer_norm()(x)
    y = keras.layers.Dense(ff_dim)(y)
    # Exact GELU in float32: its ~12 unfused elementwise ops (forward and backward) ran 2.2x slower in bfloat16 on
    # CPU without XLA, a quarter of a mixed_bfloat16 step of the default model (docs/language_model.md). ReLU is
    # one op each way and exact in any dtype: it stays in the compute dtype.
    y = keras.layers.Activation(ff_activation, dtype="float32" if ff_activation == "gelu" else None)(y)
    y = keras.layers.Dense(x.shape[-1])(y)
    return x + blocks.dropout(y, dropout)


def _rotation(positions: keras.KerasTensor, head_dim: int, heads_axis: int
              ) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """cos and sin of position x frequency (RoFormer's frequencies), (batch, length, head_dim / 2) with an axis of 1
    inserted at `heads_axis` for the heads."""
    frequencies = (ROTARY_BASE ** -(np.arange(head_dim // 2) * 2 / head_dim)).astype("float32")
    angles = keras.ops.expand_dims(keras.ops.cast(positions, "float32"), -1) * frequencies
    return keras.ops.expand_dims(keras.ops.cos(angles), heads_axis), keras.ops.expand_dims(keras.ops.sin(angles),
                                                                                          heads_axis)


def _rotate(t: keras.KerasTensor, rotation: tuple[keras.KerasTensor, keras.KerasTensor]) -> keras.KerasTensor:
    """Queries or keys rotated by their positions: each pair (first half, second half) of a head's features."""
    cos, sin = (keras.ops.cast(r, t.dtype) for r in rotation)
    first, second = keras.ops.split(t, 2, axis=-1)
    return keras.ops.concatenate([first * cos - second * sin, second * cos + first * sin], axis=-1)


def _fused_attention(x: keras.KerasTensor, num_heads: int, positions: keras.KerasTensor,
                     rotation: tuple[keras.KerasTensor, keras.KerasTensor] | None, dropout: float) -> keras.KerasTensor:
    """Causal multi-head self-attention from one query/key/value projection, heads first: two batched matmuls per
    attention, no transposes in them; an EinsumDense from (batch, heads, length, head_dim) back to the width."""
    length, embed_dim = x.shape[1], x.shape[-1]
    head_dim = embed_dim // num_heads
    # An EinsumDense with the bias on (3, heads, head_dim), not a Dense: TensorFlow's CPU graph turns a Dense's bias
    # gradient into BiasAddGrad, which sums in bfloat16 under mixed_bfloat16 (~14% error over 4,096 rows), where this
    # one stays a reduce_sum that accumulates in float32 (as MultiHeadAttention's projections' do). LeCun's uniform
    # over the width in starts it as MultiHeadAttention's glorot over (width in, width out) does.
    qkv = keras.layers.EinsumDense("blm,mchd->blchd", (length, 3, num_heads, head_dim), bias_axes="chd",
                                   kernel_initializer="lecun_uniform")(x)
    qkv = keras.ops.transpose(qkv, (2, 0, 3, 1, 4))
    query, key, value = keras.ops.unstack(qkv, 3, axis=0)  # each (batch, heads, length, head_dim)
    if rotation is not None:
        query, key = _rotate(query, rotation), _rotate(key, rotation)
    query = query * head_dim ** -0.5  # on (length, head_dim), not the scores; a Python float keeps the dtype
    scores = keras.ops.einsum("bhqd,bhkd->bhqk", query, key)
    scores = keras.ops.cast(scores, "float32") + keras_causal_attention.causal_bias(positions[0], positions[0])
    weights = blocks.dropout(keras.ops.cast(keras.ops.softmax(scores, axis=-1), value.dtype), dropout)
    attended = keras.ops.einsum("bhqk,bhkd->bhqd", weights, value)
    return keras.layers.EinsumDense("bhqd,hdm->bqm", (length, embed_dim), bias_axes="m")(attended)


def _rotary_attention(x: keras.KerasTensor, num_heads: int,
                      rotation: tuple[keras.KerasTensor, keras.KerasTensor]) -> keras.KerasTensor:
    """Causal multi-head self-attention whose queries and keys are rotated by their positions."""
    length, embed_dim = x.shape[1], x.shape[-1]
    head_dim = embed_dim // num_heads

    def project() -> keras.KerasTensor:
        return keras.layers.EinsumDense("blm,mhd->blhd", (length, num_heads, head_dim))(x)

    query, key, value = project(), project(), project()
    attended = keras.ops.dot_product_attention(_rotate(query, rotation), _rotate(key, rotation), value,
                                               is_causal=True)
    return keras.layers.EinsumDense("blhd,hdm->blm", (length, embed_dim))(attended)
