"""imdb_transformer: a small Transformer encoder classifying IMDB reviews; tokenisation runs in tf.data.

  nntrain train --experiment=imdb_transformer --model_dir=runs/imdb_transformer
"""

from nntrain.config import base_config


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
    config.schedule.name = "linear"
    config.schedule.warmup_steps = 100
    config.train.batch_size = 64
    config.train.epochs = 3
    config.train.monitor = "val_accuracy"
    return config
