"""xor: the XOR truth table learned by a small MLP (reaches 100% accuracy).

  nntrain train --experiment=xor --model_dir=runs/xor
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, layers, log_range


def get_config():
    config = base_config()
    config.data.source = "generated:xor"
    config.data.cache = "true"
    config.model.name = "mlp"
    config.model.head = "binary"
    config.model.hidden_sizes = (8,)
    config.model.activation = "tanh"
    config.model.dropout = 0.0
    config.model.l1 = 0.0
    config.model.l2 = 0.0
    config.model.batch_norm = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 0.05
    config.train.loss = "binary_crossentropy"
    config.train.batch_size = 4
    config.train.epochs = 5
    config.train.steps_per_epoch = 100  # the 4 rows, repeated
    config.train.monitor = "val_loss"
    config.train.tensorboard = False
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 4."""
    return {
        "train.batch_size": choice(2, 4),
        "optimizer.learning_rate": log_range(1e-3, 1e-1),
        "optimizer.name": choice("adam", "rmsprop"),
        "model.hidden_sizes": layers(depth=(1, 2), width=(4, 8, 16)),
    }
