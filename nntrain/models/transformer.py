"""transformer: a text classification encoder.

Token embedding (spec.vocab_size) plus a learned position embedding (spec.input_shape[0] positions), then
model.num_layers post-norm encoder blocks (MultiHeadAttention and a ReLU feed-forward of ff_dim units,
each with dropout, a residual connection and LayerNormalization), global average pooling, dropout, head.

Reads model.embed_dim, num_heads, ff_dim, num_layers, dropout.
"""

from __future__ import annotations

import keras
import ml_collections

from nntrain.data.spec import DatasetSpec
from nntrain.models import blocks, fields, heads


def build(inputs: keras.KerasTensor, model_config: ml_collections.ConfigDict, spec: DatasetSpec) -> keras.KerasTensor:
    """The outputs of a Transformer encoder on int32 token ids of shape (sequence_length,)."""
    fields.require_input(spec, "transformer", "int32 token ids of shape (sequence_length,) and a vocab_size",
                         rank=1, token_ids=True)
    embed_dim, num_heads = fields.embed_dim_and_heads(model_config)
    ff_dim = fields.positive_int(model_config, "ff_dim")
    num_layers = fields.positive_int(model_config, "num_layers")
    dropout = fields.rate(model_config, "dropout")
    x = keras.layers.Embedding(spec.vocab_size, embed_dim)(inputs)
    x = keras.layers.Add()([x, _position_embedding(inputs, embed_dim)])
    for _ in range(num_layers):
        x = _encoder_block(x, num_heads, ff_dim, dropout)
    x = keras.layers.GlobalAveragePooling1D()(x)
    x = blocks.dropout(x, dropout)
    return heads.output(x, model_config, spec)


def _position_embedding(inputs: keras.KerasTensor, embed_dim: int) -> keras.KerasTensor:
    """A learned vector per position, from built-in layers and ops only (so model.keras needs no nntrain)."""
    positions = keras.ops.cumsum(keras.ops.ones_like(inputs), axis=-1) - 1  # 0, 1, ... per row
    return keras.layers.Embedding(inputs.shape[-1], embed_dim, name="position_embedding")(positions)


def _encoder_block(x: keras.KerasTensor, num_heads: int, ff_dim: int, dropout: float) -> keras.KerasTensor:
    embed_dim = x.shape[-1]
    attention = keras.layers.MultiHeadAttention(num_heads, key_dim=embed_dim // num_heads, dropout=dropout)(x, x)
    x = _add_and_norm(x, blocks.dropout(attention, dropout))
    y = keras.layers.Dense(ff_dim, activation="relu")(x)
    y = keras.layers.Dense(embed_dim)(y)
    return _add_and_norm(x, blocks.dropout(y, dropout))


def _add_and_norm(x: keras.KerasTensor, y: keras.KerasTensor) -> keras.KerasTensor:
    return keras.layers.LayerNormalization(epsilon=1e-6)(keras.layers.Add()([x, y]))
