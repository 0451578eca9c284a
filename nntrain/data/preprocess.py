"""tf.data example preprocessing: scaling and casting, text vectorization, augmentation."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import ml_collections
import tensorflow as tf

from nntrain.data.text import VOCAB_SIZE
from nntrain.errors import NntrainError

ADAPT_EXAMPLES = 20_000  # the text vocabulary is learnt from the first examples of the train split
ADAPT_BATCH = 1_000

Example = tuple[tf.Tensor, tf.Tensor]

# Map functions without tensor-dependent Python control flow need no AutoGraph conversion: skipping it takes
# ~0.13 s off building mnist_mlp's pipelines in a fresh process (0.36 s -> 0.22 s, measured).
_traced_as_is = tf.autograph.experimental.do_not_convert


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """Turns stored `(features, label)` examples into model `(inputs, target)` pairs."""

    fn: Callable[[tf.Tensor, tf.Tensor], Example]  # one example
    batch_fn: Callable[[tf.Tensor, tf.Tensor], Example]  # a batch: one vectorised map instead of one per example
    vocab_size: int | None = None  # text sources only
    to_inputs: Callable[[tf.Tensor], tf.Tensor] | None = None  # stored features -> model inputs (serving exports)
    vectorizer: Any = None  # text sources: the TextVectorization layer that holds the vocabulary


def _identity(inputs: tf.Tensor, targets: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    return inputs, targets


# Packed sequences (text: sources) are model-ready already, in training and in the serving export (token ids in).
PACKED_TEXT = Preprocess(_identity, _identity, VOCAB_SIZE, to_inputs=tf.identity)


def fit(train: tf.data.Dataset, data_config: ml_collections.ConfigDict, num_classes: int | None = None) -> Preprocess:
    """The preprocessing of a source, fitted on its train split (only text needs fitting: the vocabulary).

    uint8 images -> float32 in [0, 1]; other numbers -> float32; strings -> int32 token ids of
    data.sequence_length. Integer labels -> int32 scalars (classes), or float32 one-hot vectors of num_classes
    when data.one_hot_labels is set; others -> float32 vectors, (1,) at least.
    """
    if data_config.source.startswith("text:"):  # packed token sequences: nothing to fit or convert
        return PACKED_TEXT
    one_hot = num_classes if data_config.one_hot_labels and num_classes else None
    dtype = train.element_spec[0].dtype
    vocab_size = vectorizer = None
    if dtype == tf.string:
        import keras  # lazy: only text needs it

        vectorizer = keras.layers.TextVectorization(max_tokens=data_config.vocab_size,
                                                    output_sequence_length=data_config.sequence_length)
        # The train split is read in its stored order, so a fresh process learns the same vocabulary.
        vectorizer.adapt(train.take(ADAPT_EXAMPLES).map(lambda features, _: features).batch(ADAPT_BATCH))
        vocab_size = vectorizer.vocabulary_size()

        def to_inputs(features: tf.Tensor) -> tf.Tensor:
            return tf.cast(vectorizer(features), tf.int32)
    elif dtype == tf.uint8:
        def to_inputs(features: tf.Tensor) -> tf.Tensor:
            return tf.cast(features, tf.float32) / 255.0
    else:
        def to_inputs(features: tf.Tensor) -> tf.Tensor:
            return tf.cast(features, tf.float32)

    @_traced_as_is
    def fn(features: tf.Tensor, label: tf.Tensor) -> Example:
        return to_inputs(features), _target(label, batched=False, one_hot=one_hot)

    @_traced_as_is
    def batch_fn(features: tf.Tensor, label: tf.Tensor) -> Example:
        inputs = to_inputs(features)
        inputs.set_shape(features.shape[:1].concatenate(inputs.shape[1:]))  # TextVectorization drops the batch size
        return inputs, _target(label, batched=True, one_hot=one_hot)

    return Preprocess(fn, batch_fn, vocab_size, to_inputs, vectorizer)


def _target(label: tf.Tensor, batched: bool, one_hot: int | None = None) -> tf.Tensor:
    """Integer labels -> int32 classes (or one-hot float32 vectors), one per example; others -> float32 vectors,
    (1,) at least, per example."""
    if label.dtype.is_integer and one_hot:
        return tf.one_hot(tf.reshape(tf.cast(label, tf.int32), [-1] if batched else []), one_hot)
    if label.dtype.is_integer:
        return tf.reshape(tf.cast(label, tf.int32), [-1] if batched else [])
    if not batched:
        return tf.reshape(tf.cast(label, tf.float32), [-1])
    width = label.shape[1:].num_elements()  # static per-example size, so batches keep static shapes
    return tf.reshape(tf.cast(label, tf.float32), [-1, width] if width else [tf.shape(label)[0], -1])


# data.augment=random_resized_crop, the ImageNet (Inception) recipe: crops of 8-100% of the area with aspect
# ratios 3/4-4/3 for training; the central 87.5% (224 of 256) for evaluation; both resized to the stored size.
CROP_AREA = (0.08, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)
CENTER_FRACTION = 0.875


def augment(batches: tf.data.Dataset, data_config: ml_collections.ConfigDict, seed: int) -> tf.data.Dataset:
    """Training augmentation of batches of images, one stateless seed per example (the k-th example of the stream
    gets the k-th seed pair, whatever the batch size), output shapes unchanged (static). A batch is augmented by
    one tf.map_fn: no tf.data function call per image. `batches` need a static batch size (drop_remainder).

    flip_crop: a random left-right flip, then pad by data.crop_padding and crop back at random.
    random_resized_crop: a random crop of CROP_AREA and CROP_ASPECT resized back, then a random flip.
    """
    if data_config.augment == "none":
        return batches
    shape = _image_shape(batches, data_config)
    padding = data_config.crop_padding

    @_traced_as_is
    def flip_crop(image: tf.Tensor, flip_seed: tf.Tensor, crop_seed: tf.Tensor) -> tf.Tensor:
        image = tf.image.stateless_random_flip_left_right(image, flip_seed)
        image = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])
        return tf.image.stateless_random_crop(image, shape, crop_seed)

    @_traced_as_is
    def random_resized_crop(image: tf.Tensor, flip_seed: tf.Tensor, crop_seed: tf.Tensor) -> tf.Tensor:
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape, tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), crop_seed, min_object_covered=CROP_AREA[0],
            aspect_ratio_range=CROP_ASPECT, area_range=CROP_AREA, max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        image = resize(tf.slice(image, begin, size), shape)
        return tf.image.stateless_random_flip_left_right(image, flip_seed)

    transform = {"flip_crop": flip_crop, "random_resized_crop": random_resized_crop}[data_config.augment]

    @_traced_as_is
    def one(image_and_seed: tuple[tf.Tensor, tf.Tensor]) -> tf.Tensor:
        image, example_seed = image_and_seed
        flip_seed, crop_seed = tf.unstack(tf.random.experimental.stateless_split(example_seed, 2))
        return transform(image, flip_seed, crop_seed)

    @_traced_as_is
    def apply(batch: Example, seeds: tf.Tensor) -> Example:
        images, labels = batch
        return tf.map_fn(one, (images, seeds), fn_output_signature=tf.TensorSpec(shape, images.dtype)), labels

    batch_size = batches.element_spec[0].shape[0]
    if batch_size is None:
        raise ValueError("augment needs batches of a static size: batch with drop_remainder=True")
    seeds = tf.data.Dataset.random(seed=seed).batch(2).batch(batch_size)  # one stateless seed pair per example
    return tf.data.Dataset.zip((batches, seeds)).map(apply, num_parallel_calls=tf.data.AUTOTUNE)


def eval_crop(batches: tf.data.Dataset, data_config: ml_collections.ConfigDict) -> tf.data.Dataset:
    """Evaluation's view of batches of images: with data.augment=random_resized_crop the central CENTER_FRACTION,
    resized back to the stored size (whole batches at once); otherwise the images as they are."""
    if data_config.augment != "random_resized_crop":
        return batches
    shape = _image_shape(batches, data_config)

    @_traced_as_is
    def center(images: tf.Tensor, labels: tf.Tensor) -> Example:
        return resize(tf.image.central_crop(images, CENTER_FRACTION), shape), labels

    return batches.map(center, num_parallel_calls=tf.data.AUTOTUNE)


def _image_shape(batches: tf.data.Dataset, data_config: ml_collections.ConfigDict) -> tf.TensorShape:
    """The shape of one image in `batches`."""
    shape = batches.element_spec[0].shape[1:]
    if shape.rank != 3 or not shape.is_fully_defined():
        raise NntrainError(f"data.augment={data_config.augment} needs images of shape (height, width, channels), "
                           f"not {tuple(shape)}: set --config.data.augment=none")
    return shape


def resize(image: tf.Tensor, shape: tf.TensorShape | tuple[int, ...]) -> tf.Tensor:
    """An image (or a batch of them) resized (bilinear) to `shape`, in the image's own dtype, static shape set."""
    resized = tf.image.resize(image, tuple(shape)[:2])
    resized = tf.saturate_cast(tf.round(resized), image.dtype) if image.dtype.is_integer else \
        tf.cast(resized, image.dtype)
    resized.set_shape(image.shape[:-3].concatenate(shape))
    return resized
