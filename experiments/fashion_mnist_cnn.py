"""fashion_mnist_cnn: a small CNN (two conv blocks, batch norm, dropout) on Fashion-MNIST.

  nntrain train --experiment=fashion_mnist_cnn --model_dir=runs/fashion_mnist_cnn
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, float_range, layers, log_range


def get_config():
    config = base_config()
    config.data.source = "tfds:fashion_mnist"
    config.model.name = "cnn"
    config.model.filters = (32, 64)
    config.model.kernel_size = 3
    config.model.dense_units = 128
    config.model.dropout = 0.3
    config.model.batch_norm = True
    config.model.activation = "relu"
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "cosine"
    config.train.batch_size = 128
    config.train.epochs = 15
    config.train.monitor = "val_accuracy"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 128."""
    return {
        "train.batch_size": choice(64, 128, 256),
        "optimizer.learning_rate": log_range(3e-4, 3e-3),
        "optimizer.name": choice("adam", "adamw"),
        "model.filters": layers(depth=(2, 3), width=(16, 32, 64), factor=2),  # 32 -> (32, 64)
        "model.dense_units": choice(64, 128, 256),
        "model.dropout": float_range(0.0, 0.5, step=0.1),
    }
