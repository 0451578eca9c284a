"""fashion_mnist_cnn: a small CNN (two conv blocks, batch norm, dropout) on Fashion-MNIST.

  nntrain train --experiment=fashion_mnist_cnn --model_dir=runs/fashion_mnist_cnn
"""

from nntrain.config import base_config


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
