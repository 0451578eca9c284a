"""gpt: a decoder-only Transformer language model (next-token probabilities at every position).

Token embedding (spec.vocab_size) plus a learned position embedding (spec.input_shape[0] positions), dropout,
then model.num_layers pre-LayerNorm decoder blocks (causal MultiHeadAttention, then a GELU feed-forward of
ff_multiplier x embed_dim units; each with dropout and a residual connection), a final LayerNormalization and
a float32 softmax over the vocabulary; with model.tie_embeddings the output projection is the token embedding
transposed. Only Keras built-in layers and ops: model.keras loads with plain `keras.saving.load_model`.

Reads model.embed_dim, num_heads, num_layers, ff_multiplier, dropout, tie_embeddings.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import blocks, fields


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """Next-token probabilities, shape (sequence_length, vocab_size), of int32 token ids of shape (sequence_length,)."""
    fields.require_input(spec, "gpt", "int32 token ids of shape (sequence_length,) and a vocab_size",
                         rank=1, token_ids=True)
    embed_dim = fields.positive_int(model_config, "embed_dim")
    num_heads = fields.positive_int(model_config, "num_heads")
    if embed_dim % num_heads:
        raise fields.bad("embed_dim", embed_dim, f"it must be divisible by config.model.num_heads={num_heads}, "
                                                 f"e.g. {-(-embed_dim // num_heads) * num_heads}")
    num_layers = fields.positive_int(model_config, "num_layers")
    ff_dim = fields.positive_int(model_config, "ff_multiplier") * embed_dim
    dropout = fields.rate(model_config, "dropout")
    tie = fields.flag(model_config, "tie_embeddings")

    embedding = keras.layers.Embedding(spec.vocab_size, embed_dim, name="token_embedding")
    positions = keras.ops.cumsum(keras.ops.ones_like(inputs), axis=1) - 1  # 0..length-1, from built-in ops
    x = embedding(inputs) + keras.layers.Embedding(spec.input_shape[0], embed_dim, name="position_embedding")(positions)
    x = blocks.dropout(x, dropout)
    for _ in range(num_layers):
        x = _decoder_block(x, num_heads, ff_dim, dropout)
    x = keras.layers.LayerNormalization(name="final_norm")(x)
    if tie:
        # The embedding looked up at ids 0..vocab_size-1 is its table, as a graph tensor: no custom layer needed.
        ones = keras.ops.ones_like(inputs[0, :1]) + keras.ops.zeros(spec.vocab_size, "int32")
        vocabulary = keras.ops.cumsum(ones) - 1
        logits = keras.ops.matmul(x, keras.ops.transpose(embedding(vocabulary)))
    else:
        logits = keras.layers.Dense(spec.vocab_size, name="logits")(x)
    return keras.layers.Activation("softmax", dtype="float32", name="predictions")(logits)


def _decoder_block(x: keras.KerasTensor, num_heads: int, ff_dim: int, dropout: float) -> keras.KerasTensor:
    embed_dim = x.shape[-1]
    y = keras.layers.LayerNormalization()(x)
    y = keras.layers.MultiHeadAttention(num_heads, key_dim=embed_dim // num_heads, dropout=dropout)(
        y, y, use_causal_mask=True)
    x = x + blocks.dropout(y, dropout)
    y = keras.layers.LayerNormalization()(x)
    y = keras.layers.Dense(ff_dim, activation="gelu")(y)
    y = keras.layers.Dense(embed_dim)(y)
    return x + blocks.dropout(y, dropout)
