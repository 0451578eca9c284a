"""quadratic: regression of y = x^2 on x in [0, 1] with a GELU MLP and MSE (held-out MSE <= 3e-4).

  nntrain train --experiment=quadratic --model_dir=runs/quadratic
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, layers, log_range


def get_config():
    config = base_config()
    config.data.source = "generated:quadratic"
    config.data.num_examples = 1024
    config.model.name = "mlp"
    config.model.head = "regression"
    config.model.num_outputs = 1
    config.model.hidden_sizes = (32, 32)
    config.model.activation = "gelu"
    config.model.dropout = 0.0
    config.model.l1 = 0.0
    config.model.l2 = 0.0
    config.model.batch_norm = False
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 3e-3
    config.schedule.name = "cosine"
    config.schedule.end_learning_rate = 1e-5
    config.train.loss = "mse"
    config.train.metrics = ("mse",)
    config.train.batch_size = 32
    config.train.epochs = 30
    config.train.monitor = "val_loss"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 32."""
    return {
        "train.batch_size": choice(16, 32, 64),
        "optimizer.learning_rate": log_range(3e-4, 3e-2),
        "optimizer.name": choice("adam", "adamw"),
        "model.hidden_sizes": layers(depth=(1, 2, 3), width=(16, 32, 64)),
        "model.activation": choice("gelu", "tanh", "relu"),
    }
