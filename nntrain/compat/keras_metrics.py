"""Which way a Keras metric improves: Keras keeps it in a private attribute, `Metric._direction` ("up"/"down").

Keras's own callbacks read it (`keras/src/callbacks/monitor_callback.py`, Keras 3.15) and there is no public
accessor; keras-tuner 1.4.8's `infer_metric_direction` guesses from names instead and calls r2_score "min".
Delete this module once Keras exposes the direction:
`tests/test_rundir.py::test_keras_metric_directions` notices when the attribute changes.
"""

from __future__ import annotations

import keras
import tensorflow as tf


def direction(name: str) -> str | None:
    """"up", "down", or None when `name` is not a Keras metric that declares its direction.

    The metric is built in a throwaway graph: its variables must not start TensorFlow's eager context, which a
    multi-worker strategy configures later (collective ops are configured at program start-up only).
    """
    with tf.Graph().as_default():
        try:
            metric = keras.metrics.get(name)
        except ValueError:
            return None
    return getattr(metric, "_direction", None)
