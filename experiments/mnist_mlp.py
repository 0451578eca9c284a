"""mnist_mlp: the classic Dense 256-128-10 ReLU network on MNIST, Adam, sparse categorical cross-entropy.

  nntrain train --experiment=mnist_mlp --model_dir=runs/mnist_mlp

Offline, on local IDX files (the official MNIST test set split 8,000 / 2,000):

  nntrain train --experiment=mnist_mlp --model_dir=runs/mnist_mlp \
    --config.data.source=idx:../shared/data/mnist \
    --config.data.train_split='test[:8000]' --config.data.eval_split='test[8000:]'
"""

from nntrain.config import base_config


def get_config():
    config = base_config()
    config.data.source = "tfds:mnist"
    config.model.name = "mlp"
    config.model.hidden_sizes = (256, 128)
    config.model.activation = "relu"
    config.model.dropout = 0.0
    config.model.l1 = 0.0
    config.model.l2 = 0.0
    config.model.batch_norm = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.train.batch_size = 128
    config.train.epochs = 10
    config.train.monitor = "val_accuracy"
    return config
