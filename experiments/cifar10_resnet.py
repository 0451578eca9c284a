"""cifar10_resnet: ResNet-20 (He et al. 2016) on CIFAR-10 with random flip and crop, SGD + momentum, cosine.

  nntrain train --experiment=cifar10_resnet --model_dir=runs/cifar10_resnet
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, log_range


def get_config():
    config = base_config()
    config.data.source = "tfds:cifar10"
    config.data.input_shape = (32, 32, 3)
    config.data.augment = "flip_crop"
    config.data.crop_padding = 4
    config.model.name = "resnet"
    config.model.depth = 20
    config.model.width = 16
    config.model.l2 = 5e-5  # Keras L2 factor: adds l2*sum(w^2), i.e. the paper's weight decay 1e-4
    config.optimizer.name = "sgd"
    config.optimizer.learning_rate = 0.1
    config.optimizer.momentum = 0.9
    config.optimizer.nesterov = True
    config.schedule.name = "cosine"
    config.schedule.warmup_steps = 390
    config.train.batch_size = 128
    config.train.epochs = 100
    config.train.label_smoothing = 0.1
    config.data.one_hot_labels = True  # Keras's label smoothing needs one-hot labels
    config.train.monitor = "val_accuracy"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md); the learning rate is the base rate at batch size 128,
    scaled linearly for SGD."""
    return {
        "train.batch_size": choice(64, 128, 256),
        "optimizer.learning_rate": log_range(0.02, 0.4),
        "optimizer.name": choice("sgd", "adamw"),
        "model.depth": choice(8, 14, 20, 32),
        "model.width": choice(16, 32),
        "train.label_smoothing": choice(0.0, 0.1),
    }
