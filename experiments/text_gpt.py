"""text_gpt: a GPT-style byte-level language model on text files; by default the `.py` files of the running
interpreter's standard library (on every machine, no download), 90% of the files for training.

  nntrain train --experiment=text_gpt --model_dir=runs/text_gpt
  nntrain generate --model_dir=runs/text_gpt --prompt='def ' --max_new_tokens=200 --seed=0

On a folder of your own text:

  nntrain train --experiment=text_gpt --model_dir=runs/my_text --config.data.source='text:my_texts/*.txt'

Sizes are variants (`--experiment=text_gpt:VARIANT`; docs/language_model.md has each one's tokens/s and memory):

  nntrain train --experiment=text_gpt:tiny --model_dir=/tmp/text_gpt_tiny    # 32 wide, 1 layer, 8 steps: tests
  nntrain train --experiment=text_gpt --model_dir=runs/text_gpt              # default: 128 x 3 layers, 0.64 M
  nntrain train --experiment=text_gpt:small --model_dir=runs/text_gpt_small  # 384 x 6 layers, context 256, 11 M
  nntrain train --experiment=text_gpt:base --model_dir=runs/text_gpt_base    # GPT-2 small: 768 x 12, context 1024, 86 M
"""

import sysconfig

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, log_range

RUNLOCAL = {"model.embed_dim": 32, "model.num_layers": 1, "data.sequence_length": 32, "train.batch_size": 8,
            "train.epochs": 2, "train.steps_per_epoch": 4, "train.eval_steps": 2, "train.tensorboard": False}


VARIANTS = ("tiny", "default", "small", "base")
SIZES = {  # the model and batch of each variant beyond the default
    "tiny": RUNLOCAL,
    "small": {"model.embed_dim": 384, "model.num_heads": 6, "model.num_layers": 6, "data.sequence_length": 256,
              "optimizer.learning_rate": 1e-3, "train.batch_size": 16, "train.eval_steps": 24},
    "base": {"model.embed_dim": 768, "model.num_heads": 12, "model.num_layers": 12, "data.sequence_length": 1024,
             "optimizer.learning_rate": 6e-4, "schedule.warmup_steps": 200, "train.batch_size": 8,
             "optimizer.gradient_accumulation_steps": 4, "train.eval_steps": 12, "train.checkpoint_every_steps": 100},
}


def get_config(variant: str = "default"):
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
    config.model.ff_activation = "relu"  # relu | gelu (runs saved before this key: gelu); docs/language_model.md
    config.model.fused_qkv = False  # true: ~2% faster here, ~1% more bits per byte at 600 steps (bfloat16)
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
    for key, value in SIZES.get(variant, {}).items():
        section, field = key.split(".")
        config[section][field] = value
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
