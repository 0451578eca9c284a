"""Input pipelines: distributed per-replica batches for training, plain batches for evaluate/predict."""

from __future__ import annotations

import dataclasses
import math

import ml_collections
import tensorflow as tf

from nntrain.data import checks, preprocess, service
from nntrain.data.sources import Source, open_source
from nntrain.data.spec import DatasetSpec
from nntrain.data.splits import Split
from nntrain.errors import NntrainError

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What training reads: distributed datasets and the step counts that go with them."""

    train: tf.distribute.DistributedDataset  # repeated forever
    eval: tf.distribute.DistributedDataset | None  # one pass; None when data.eval_split is ''
    spec: DatasetSpec
    steps_per_epoch: int  # one pass over the train split
    eval_steps: int | None  # one pass over the eval split
    per_replica_batch_size: int
    global_batch_size: int
    num_replicas: int


def build(data_config: ml_collections.ConfigDict, global_batch_size: int, strategy: tf.distribute.Strategy,
          seed: int = 0) -> Datasets:
    """Train and eval pipelines of `data_config`, batched per replica and distributed by `strategy`.

    Train: shard, cache, shuffle, repeat, augment, batch (drop remainder), preprocess, prefetch.
    Eval: shard, cache, batch (drop remainder only on TPUs, which need static shapes), preprocess, prefetch.
    Preprocessing maps whole batches: one map per example made mnist_mlp input-bound (docs/benchmarks.md).
    """
    num_replicas = strategy.num_replicas_in_sync
    if global_batch_size <= 0 or global_batch_size % num_replicas:
        raise NntrainError(f"train.batch_size={global_batch_size} is not a positive multiple of the "
                           f"{num_replicas} replicas: use e.g. --config.train.batch_size={num_replicas * 32}")
    source = open_source(data_config)
    train = _select(source, data_config.train_split)
    evaluation = _select(source, data_config.eval_split) if data_config.eval_split else None
    checks.check_splits(data_config, source.name, source.num_classes, train, evaluation, global_batch_size)
    prep = preprocess.fit(train.dataset, data_config)
    static_shapes = isinstance(strategy, tf.distribute.TPUStrategy)

    def train_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = _input(train, ctx, data_config).shuffle(data_config.shuffle_buffer, seed=seed).repeat()
        dataset = preprocess.augment(dataset, data_config, seed)
        dataset = dataset.batch(ctx.get_per_replica_batch_size(global_batch_size), drop_remainder=True)
        dataset = dataset.map(prep.batch_fn, num_parallel_calls=AUTOTUNE)
        if data_config.service:  # the tf.data service's workers run all of the above
            dataset = service.distribute(dataset, data_config.service)
        return dataset.prefetch(AUTOTUNE).with_options(_options())

    def eval_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = _input(evaluation, ctx, data_config)
        dataset = dataset.batch(ctx.get_per_replica_batch_size(global_batch_size), drop_remainder=static_shapes)
        return dataset.map(prep.batch_fn, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE).with_options(_options())

    eval_steps = None
    if evaluation is not None:
        eval_steps = _steps(evaluation.num_examples, global_batch_size, drop_remainder=static_shapes)
        if eval_steps == 0:
            raise NntrainError(f"eval split '{data_config.eval_split}' has {evaluation.num_examples} examples, "
                               f"fewer than one batch of {global_batch_size}: use a larger split or batch")
    return Datasets(
        train=strategy.distribute_datasets_from_function(train_fn),
        eval=strategy.distribute_datasets_from_function(eval_fn) if evaluation is not None else None,
        spec=_spec(source, train, evaluation, prep),
        steps_per_epoch=_steps(train.num_examples, global_batch_size, drop_remainder=False),
        eval_steps=eval_steps,
        per_replica_batch_size=global_batch_size // num_replicas,
        global_batch_size=global_batch_size,
        num_replicas=num_replicas,
    )


def load_split(data_config: ml_collections.ConfigDict, split: str,
               batch_size: int) -> tuple[tf.data.Dataset, DatasetSpec]:
    """One split, preprocessed (no augmentation) and batched, in order, for evaluate and predict.

    The spec describes the train split, as in `build`, with this split's size as `eval_examples`.
    """
    if batch_size <= 0:
        raise NntrainError(f"batch size {batch_size} must be > 0")
    source = open_source(data_config)
    train = _select(source, data_config.train_split)
    selected = _select(source, split)
    prep = preprocess.fit(train.dataset, data_config)
    dataset = selected.dataset.batch(batch_size).map(prep.batch_fn, num_parallel_calls=AUTOTUNE)
    dataset = dataset.prefetch(AUTOTUNE).with_options(_options())
    return dataset, _spec(source, train, selected, prep)


def _select(source: Source, spec: str) -> Split:
    split = source.select(spec)
    if split.num_examples == 0:
        raise NntrainError(f"split '{spec}' of data.source={source.name} selects no examples: widen the slice")
    return split


def _input(split: Split, ctx: tf.distribute.InputContext, data_config: ml_collections.ConfigDict) -> tf.data.Dataset:
    """This input pipeline's shard of a split, cached after its first pass when data.cache is set."""
    dataset = split.dataset
    if ctx.num_input_pipelines > 1:
        dataset = dataset.shard(ctx.num_input_pipelines, ctx.input_pipeline_id)
    return dataset.cache() if data_config.cache and split.cacheable else dataset


def _options() -> tf.data.Options:
    """Deterministic order everywhere: the same seed gives the same run, and resumes replay the same data."""
    options = tf.data.Options()
    options.deterministic = True
    return options


def _steps(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    return num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)


def _spec(source: Source, train: Split, evaluation: Split | None, prep: preprocess.Preprocess) -> DatasetSpec:
    inputs = train.dataset.map(prep.fn).element_spec[0]
    return DatasetSpec(
        input_shape=tuple(inputs.shape),
        input_dtype=inputs.dtype.name,
        num_classes=source.num_classes,
        train_examples=train.num_examples,
        eval_examples=evaluation.num_examples if evaluation is not None else None,
        vocab_size=prep.vocab_size,
    )
