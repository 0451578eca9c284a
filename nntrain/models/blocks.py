"""Layer patterns the builders share."""

from __future__ import annotations

import keras


def regularizer(l1: float, l2: float) -> keras.regularizers.Regularizer | None:
    """An L1L2 kernel regularizer, or None when both factors are 0."""
    return keras.regularizers.L1L2(l1=l1, l2=l2) if l1 or l2 else None


def normalize_activate(x: keras.KerasTensor, activation: str, batch_norm: bool) -> keras.KerasTensor:
    """[BatchNormalization] -> activation."""
    if batch_norm:
        x = keras.layers.BatchNormalization()(x)
    return keras.layers.Activation(activation)(x)


def dropout(x: keras.KerasTensor, rate: float) -> keras.KerasTensor:
    """Dropout, left out when the rate is 0."""
    return keras.layers.Dropout(rate)(x) if rate else x
