"""Causal self-attention's scores and weights with fewer, cheaper ops (Keras 3.15, TF backend).

Keras's `MultiHeadAttention` called with `use_causal_mask=True` and no dropout computes its attention in
`ops.dot_product_attention(is_causal=True)` (keras/src/backend/tensorflow/nn.py `_dot_product_attention_xla`):
two `Einsum`s, the scores cast to float32 and scaled, then a boolean (batch, heads, query, key) mask built from
`ones_like` and a lower-triangular band, and a `SelectV2` of the scores or a large negative (and another in the
gradient), before a float32 softmax cast back to the compute dtype. `written_out(layer)` replaces
`_compute_attention` on one layer with the same function: heads moved first by transposes and two `BatchMatMulV2`
(faster than TensorFlow's `Einsum` on CPU here), the causal mask an additive float32 (query, key) bias of 0 or
-1e9 (constant-folded by TensorFlow's graph optimizer, no select forward or backward). Where a key is after its
query the softmax's weight is exactly 0 in both, and so is its gradient: outputs and gradients equal Keras's to
the rounding of the products (float32; a bfloat16 step under mixed_bfloat16). For the default text_gpt on this
CPU, ~7% more tokens per CPU second in mixed_bfloat16 (docs/benchmarks.md). The layer stays Keras's own
(`model.keras` loads in plain Keras). Calls with dropout, an attention mask, no causal mask, the scores returned
or more than one attention axis keep Keras's method.
`tests/test_gpt.py::test_causal_attention_written_out_is_keras_s` fails when Keras changes the method.
"""

from __future__ import annotations

import types

import keras
import tensorflow as tf

MASKED = -1e9  # added to a scaled float32 score whose key is after its query: exp underflows to exactly 0


def written_out(layer: keras.layers.MultiHeadAttention) -> keras.layers.MultiHeadAttention:
    """`layer`, its causal attention without dropout computed by `_causal_attention`."""

    def compute_attention(self: keras.layers.MultiHeadAttention, query, key, value, attention_mask=None,
                          training=None, return_attention_scores=False, use_causal_mask=False):
        if (not use_causal_mask or attention_mask is not None or return_attention_scores or self.dropout > 0
                or len(query.shape) != 4):
            return keras.layers.MultiHeadAttention._compute_attention(
                self, query, key, value, attention_mask, training, return_attention_scores, use_causal_mask)
        return _causal_attention(query, key, value, self._inverse_sqrt_key_dim), None

    layer._compute_attention = types.MethodType(compute_attention, layer)
    return layer


def _causal_attention(query: tf.Tensor, key: tf.Tensor, value: tf.Tensor, scale: float) -> tf.Tensor:
    """(batch, query, heads, dim) attended: softmax(query . key * scale + causal bias) in float32 over values."""
    query, key, value = (tf.transpose(t, (0, 2, 1, 3)) for t in (query, key, value))  # heads first
    scores = tf.cast(tf.matmul(query, key, transpose_b=True), tf.float32) * scale
    weights = tf.nn.softmax(scores + causal_bias(tf.range(tf.shape(query)[2]), tf.range(tf.shape(key)[2])))
    return tf.transpose(tf.matmul(tf.cast(weights, value.dtype), value), (0, 2, 1, 3))


def causal_bias(queries: tf.Tensor, keys: tf.Tensor) -> tf.Tensor:
    """(queries, keys) float32 of 1-D positions: 0 where a key is at or before its query (Keras's lower-triangular
    causal mask), MASKED after; in keras.ops, so that a functional model's tensors take it too."""
    return keras.ops.where(keras.ops.expand_dims(keys, 0) > keras.ops.expand_dims(queries, 1), MASKED, 0.0)
