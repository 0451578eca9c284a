"""nntrain: train Keras models on CPU, GPU and TPU with tf.distribute, and tune them with keras-tuner.

    import nntrain
    config = nntrain.load_config("mnist_mlp", {"train.epochs": 3})
    metrics = nntrain.train(config, "runs/mnist_mlp")

Importing nntrain does not import TensorFlow; the first call that needs it does, with TensorFlow's C++ start-up
records hidden, and TF_CPP_MIN_LOG_LEVEL=2 unless it is set (C++ info and warning records off).
"""

from nntrain import quiet
from nntrain.api import (
    bench,
    detect_runtime,
    doctor,
    evaluate,
    export,
    find_batch_size,
    find_lr,
    history,
    load_config,
    predict,
    preflight,
    train,
    tune,
)
from nntrain.errors import NntrainError
from nntrain.registry import register_model, register_source, register_strategy, register_tuner

quiet.tensorflow_logs_to_errors()  # before TensorFlow is imported (none of the imports above imports it)

__all__ = ["NntrainError", "bench", "detect_runtime", "doctor", "evaluate", "export", "find_batch_size", "find_lr",
           "history", "load_config", "predict", "preflight", "register_model", "register_source", "register_strategy",
           "register_tuner", "train", "tune"]
__version__ = "0.1.0"
