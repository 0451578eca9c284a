"""TensorBoard HParams for a search: the experiment config (hparams and metrics) once, each trial by keras-tuner.

keras-tuner logs a trial's hyperparameters only when a TensorBoard callback is passed (into
logs/<trial>/execution<k>), and never writes the `hparams_config` that lists the hyperparameters' domains and
the metrics; `write_config` adds it at the root of the log directory.
"""

from __future__ import annotations

import keras
import keras_tuner
import ml_collections
import tensorflow as tf
from tensorboard.plugins.hparams import api as hparams_api

from nntrain import rundir
from nntrain.compat import keras_tensorboard, keras_tuner_hparams

LOGS = "logs"


def callback(log_dir: str) -> keras.callbacks.TensorBoard:
    """The TensorBoard callback keras-tuner copies into each trial (and adds its HParams callback beside)."""
    return keras_tensorboard.TensorBoard(log_dir, write_graph=False)


def write_config(log_dir: str, space: keras_tuner.HyperParameters, config: ml_collections.ConfigDict) -> bool:
    """Writes the HParams experiment config into log_dir unless it is there already; True if written."""
    if rundir.glob(rundir.join(log_dir, "events.out.tfevents.*")):
        return False
    names = ["loss", *config.train.metrics]
    metrics = [hparams_api.Metric(f"epoch_{name}", group="train", display_name=name) for name in names]
    if config.data.eval_split:
        metrics += [hparams_api.Metric(f"epoch_{name}", group="validation", display_name=f"val_{name}")
                    for name in names]
    hparams = list(keras_tuner_hparams.to_hparams(space, hparams_api))
    writer = tf.summary.create_file_writer(log_dir)
    with writer.as_default():
        hparams_api.hparams_config(hparams=hparams, metrics=metrics)
    writer.close()
    return True
