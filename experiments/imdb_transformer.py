"""imdb_transformer: a small Transformer encoder classifying IMDB reviews; tokenisation runs in tf.data.

  nntrain train --experiment=imdb_transformer --model_dir=runs/imdb_transformer
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, float_range, log_range


def get_config():
    config = base_config()
    config.data.source = "tfds:imdb_reviews"
    config.data.vocab_size = 20_000
    config.data.sequence_length = 200
    config.model.name = "transformer"
    config.model.embed_dim = 64
    config.model.num_heads = 2
    config.model.ff_dim = 128
    config.model.num_layers = 1
    config.model.dropout = 0.1
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 5e-4
    config.schedule.name = "cosine"  # with warmup: Keras's CosineDecay has it built in
    config.schedule.warmup_steps = 100
    config.train.batch_size = 64
    config.train.epochs = 3
    config.train.monitor = "val_accuracy"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 64."""
    return {
        "train.batch_size": choice(32, 64, 128),
        "optimizer.learning_rate": log_range(1e-4, 2e-3),
        "optimizer.name": choice("adamw", "adam"),
        "model.num_heads": choice(1, 2, 4),
        "model.num_layers": choice(1, 2, 3),
        "model.dropout": float_range(0.0, 0.3, step=0.1),
    }
