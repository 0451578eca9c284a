"""Key/value-cached decoding of a trained `gpt` model: the prompt once (prefill), then one position per step.

`Decoder(model)` finds the model's layers by kind and order (token and position embeddings, per block two
LayerNormalizations, the attention's projections (one query/key/value EinsumDense with model.fused_qkv, else
separate ones), two Dense layers and the Activation between them (older runs: GELU inside the first Dense); the
final norm and the tied or dense output)
and calls those same layers on one position at a time, keeping every block's keys and values in a cache of shape
(num_layers, 2, batch, context, num_heads, head_dim) in the model's compute dtype (bfloat16 for a mixed_bfloat16
run). It works on any model `gpt.build` made, old runs included: no layer names are needed beyond the ones
`build` always gave. Next-token probabilities equal the full model's (tests/test_gpt_decoding.py: to 1e-5).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from nntrain.models.gpt import ROTARY_BASE


@dataclasses.dataclass(frozen=True)
class _Block:
    attention_norm: keras.layers.Layer
    projections: tuple[keras.layers.Layer, ...]  # query, key, value; or one of all three (fused_qkv)
    output: keras.layers.Layer  # its kernel (heads, head_dim, width); fused: from heads first
    ff_norm: keras.layers.Layer
    ff_in: keras.layers.Layer
    ff_activation: keras.layers.Layer | None  # None: GELU inside ff_in (runs made before the float32 GELU)
    ff_out: keras.layers.Layer


class Decoder:
    """Cached forward passes of a gpt model: `prefill` a window of tokens, then `step` one position at a time."""

    def __init__(self, model: keras.Model):
        layers = {layer.name: layer for layer in model.layers}
        self.token_embedding = layers["token_embedding"]
        self.position_embedding = layers.get("position_embedding")
        self.final_norm = layers["final_norm"]
        self.output_dense = layers.get("logits")  # None: tied to the token embedding
        self.context = int(model.input_shape[1])
        self.blocks = _blocks(model)
        self.head_dim = int(self.blocks[0].output.kernel.shape[1])  # (heads, head_dim, width)
        self.rotary = self.position_embedding is None

    def prefill(self, tokens: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(next-token logits at every position (batch, context, vocab) float32, the cache) of a full window."""
        positions = tf.range(self.context)
        x = self._embed(tokens, positions)
        keys_values = []
        for block in self.blocks:
            query, key, value = self._project(block, x, positions)
            keys_values.append(tf.stack([key, value]))
            x = self._finish_block(block, x, _attend(query, key, value, tf.range(self.context)[:, None]))
        return self._logits(x), tf.stack(keys_values)

    def step(self, tokens: tf.Tensor, index: tf.Tensor, cache: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """(next-token logits (batch, vocab) float32, the updated cache) after `tokens` (batch,) at `index`."""
        positions = tf.reshape(index, [1])
        x = self._embed(tokens[:, None], positions)
        new_cache = []
        for layer, block in enumerate(self.blocks):
            query, key, value = self._project(block, x, positions)
            keys = _write(cache[layer, 0], key, index)
            values = _write(cache[layer, 1], value, index)
            new_cache.append(tf.stack([keys, values]))
            x = self._finish_block(block, x, _attend(query, keys, values, positions[:, None]))
        return self._logits(x)[:, 0], tf.stack(new_cache)

    def _embed(self, tokens: tf.Tensor, positions: tf.Tensor) -> tf.Tensor:
        x = self.token_embedding(tokens)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)[None]
        return x

    def _project(self, block: _Block, x: tf.Tensor, positions: tf.Tensor) -> tuple[tf.Tensor, ...]:
        normed = block.attention_norm(x)
        if len(block.projections) == 1:
            query, key, value = tf.unstack(block.projections[0](normed), axis=2)  # (batch, length, 3, heads, ...)
        else:
            query, key, value = (projection(normed) for projection in block.projections)
        if self.rotary:
            query, key = (_rotate(t, positions, self.head_dim) for t in (query, key))
        return query, key, value

    def _finish_block(self, block: _Block, x: tf.Tensor, attended: tf.Tensor) -> tf.Tensor:
        if len(block.projections) == 1:  # the fused attention's output projection takes heads first
            attended = tf.transpose(attended, [0, 2, 1, 3])
        x = x + block.output(attended)
        hidden = block.ff_in(block.ff_norm(x))
        if block.ff_activation is not None:
            hidden = block.ff_activation(hidden)
        return x + block.ff_out(hidden)

    def _logits(self, x: tf.Tensor) -> tf.Tensor:
        x = self.final_norm(x)
        if self.output_dense is not None:
            return tf.cast(self.output_dense(x), tf.float32)
        table = tf.cast(self.token_embedding.embeddings, x.dtype)
        return tf.cast(tf.einsum("blm,vm->blv", x, table), tf.float32)


def _blocks(model: keras.Model) -> list[_Block]:
    """Each decoder block's layers, in the order gpt.build made them."""
    def kind(cls: type) -> list[keras.layers.Layer]:
        return [layer for layer in model.layers if type(layer) is cls and layer.name not in ("final_norm", "logits")]

    norms, dense = kind(keras.layers.LayerNormalization), kind(keras.layers.Dense)
    activations = [layer for layer in kind(keras.layers.Activation) if layer.name != "predictions"]
    attention, einsum = kind(keras.layers.MultiHeadAttention), kind(keras.layers.EinsumDense)
    count = len(norms) // 2
    if attention:
        projections = [(a.query_dense, a.key_dense, a.value_dense, a.output_dense) for a in attention]
    elif len(einsum) == 2 * count:  # fused_qkv: a query/key/value and an output EinsumDense per block
        projections = [tuple(einsum[i:i + 2]) for i in range(0, len(einsum), 2)]
    else:  # rotary: query, key, value and output EinsumDense layers
        projections = [tuple(einsum[i:i + 4]) for i in range(0, len(einsum), 4)]
    return [_Block(norms[2 * i], projections[i][:-1], projections[i][-1], norms[2 * i + 1], dense[2 * i],
                   activations[i] if activations else None, dense[2 * i + 1]) for i in range(count)]


def _write(cache: tf.Tensor, new: tf.Tensor, index: tf.Tensor) -> tf.Tensor:
    """cache (batch, context, heads, head_dim) with position `index` replaced by new (batch, 1, heads, head_dim)."""
    at = tf.one_hot(index, tf.shape(cache)[1], dtype=cache.dtype)[None, :, None, None]
    return cache * (1 - at) + new * at


def _attend(query: tf.Tensor, key: tf.Tensor, value: tf.Tensor, query_positions: tf.Tensor) -> tf.Tensor:
    """Causal attention of queries at query_positions (queries, 1) over keys at positions 0..context-1."""
    scale = tf.cast(1.0 / np.sqrt(query.shape[-1]), query.dtype)
    scores = tf.cast(tf.einsum("bqhd,bkhd->bhqk", query * scale, key), tf.float32)
    visible = tf.range(tf.shape(key)[1])[None, :] <= query_positions  # (queries, keys)
    weights = tf.cast(tf.nn.softmax(tf.where(visible, scores, -1e9), axis=-1), value.dtype)
    return tf.einsum("bhqk,bkhd->bqhd", weights, value)


def _rotate(t: tf.Tensor, positions: tf.Tensor, head_dim: int) -> tf.Tensor:
    """RoFormer's rotation of t (batch, length, heads, head_dim) by positions (length,), as gpt._rotation."""
    frequencies = (ROTARY_BASE ** -(np.arange(head_dim // 2) * 2 / head_dim)).astype("float32")
    angles = tf.cast(positions, tf.float32)[:, None] * frequencies
    cos, sin = (tf.cast(f(angles)[None, :, None, :], t.dtype) for f in (tf.cos, tf.sin))
    first, second = tf.split(t, 2, axis=-1)
    return tf.concat([first * cos - second * sin, second * cos + first * sin], axis=-1)
