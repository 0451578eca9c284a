"""text_gpt: a small GPT-style byte-level language model on text files; by default the `.py` files of the
running interpreter's standard library (on every machine, no download), 90% of the files for training.

  nntrain train --experiment=text_gpt --model_dir=runs/text_gpt
  nntrain generate --model_dir=runs/text_gpt --prompt='def ' --max_new_tokens=200 --seed=0

On a folder of your own text:

  nntrain train --experiment=text_gpt --model_dir=runs/my_text --config.data.source='text:my_texts/*.txt'

The small variant for quick checks and tests (a tiny model on a few steps; the RUNLOCAL overrides below):

  nntrain train --experiment=text_gpt --model_dir=/tmp/text_gpt_local --config.model.embed_dim=32 \
    --config.model.num_layers=1 --config.data.sequence_length=32 --config.train.batch_size=8 \
    --config.train.epochs=2 --config.train.steps_per_epoch=4 --config.train.eval_steps=2
"""

import sysconfig

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, log_range

RUNLOCAL = {"model.embed_dim": 32, "model.num_layers": 1, "data.sequence_length": 32, "train.batch_size": 8,
            "train.epochs": 2, "train.steps_per_epoch": 4, "train.eval_steps": 2, "train.tensorboard": False}


def get_config():
    config = base_config()
    config.data.source = f"text:{sysconfig.get_paths()['stdlib']}/*.py"
    config.data.train_split = "train[:90%]"  # whole files: the 10% held out are files the model never saw
    config.data.eval_split = "train[90%:]"
    config.data.sequence_length = 128
    config.data.cache = "false"  # a corpus is streamed from its files
    config.model.name = "gpt"
    config.model.embed_dim = 128
    config.model.num_heads = 4
    config.model.num_layers = 3
    config.model.ff_multiplier = 4
    config.model.dropout = 0.0
    config.model.tie_embeddings = True
    config.model.positions = "learned"  # learned | rotary
    config.optimizer.name = "adamw"
    config.optimizer.learning_rate = 3e-3
    config.optimizer.global_clip_norm = 1.0
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 100
    config.train.batch_size = 32
    config.train.epochs = 10
    config.train.steps_per_epoch = 200
    config.train.eval_steps = 48  # the same first 1,536 held-out sequences (~200 KB) after every epoch
    config.train.monitor = "val_loss"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 32."""
    return {
        "model.embed_dim": choice(64, 128, 256),
        "model.num_layers": choice(2, 3, 4, 6),
        "model.num_heads": choice(2, 4, 8),
        "optimizer.learning_rate": log_range(3e-4, 1e-2),
        "train.batch_size": choice(16, 32, 64),
    }
