"""images_finetune: MobileNetV3Small pretrained on ImageNet, fine-tuned on a folder of images in two phases:
3 epochs train the new head on the frozen backbone, then the whole backbone (BatchNormalization frozen) trains
on at a tenth of the learning rate.

  nntrain train --experiment=images_finetune --config.data.source=images:flower_photos --model_dir=runs/flowers

`images:DIR` holds one folder of images per class (DIR/CLASS/*.jpg); the default, flower_photos, is TensorFlow's
example set: https://storage.googleapis.com/download.tensorflow.org/example_images/flower_photos.tgz, untarred.
The ImageNet weights are read from Keras's cache only; the first run names the file to place in ~/.keras/models/
and its URL, or pass your own with --config.model.backbone_weights=PATH.weights.h5 (none: from scratch).
"""

from nntrain.config import base_config
from nntrain.tuning.search_space import choice, log_range


def get_config():
    config = base_config()
    config.data.source = "images:flower_photos"
    config.data.train_split = "train[:90%]"
    config.data.eval_split = "train[90%:]"
    config.data.image_size = (224, 224)
    config.data.channels = 3
    config.data.augment = "flip_crop"
    config.data.crop_padding = 16
    config.model.name = "backbone"
    config.model.backbone = "MobileNetV3Small"
    config.model.backbone_weights = "imagenet"
    config.model.pooling = "avg"
    config.model.dropout = 0.2
    config.finetune.freeze_epochs = 3
    config.finetune.unfreeze_layers = 0  # all
    config.finetune.backbone_lr_scale = 0.1
    config.optimizer.name = "adam"
    config.optimizer.learning_rate = 1e-3
    config.schedule.name = "cosine"
    config.train.batch_size = 32
    config.train.epochs = 10
    config.train.monitor = "val_accuracy"
    return config


def get_search_space():
    """What `nntrain tune` searches (docs/tuning.md): the batch, the head's learning rate, how long the backbone
    stays frozen and how much of it trains after (MobileNetV3Small's backbone has 157 layers; 0: all)."""
    return {
        "train.batch_size": choice(16, 32, 64),
        "optimizer.learning_rate": log_range(1e-4, 3e-3),
        "finetune.freeze_epochs": choice(0, 2, 4),
        "finetune.unfreeze_layers": choice(0, 30, 60),
        "finetune.backbone_lr_scale": choice(0.01, 0.1),
    }
