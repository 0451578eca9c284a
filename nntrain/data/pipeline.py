"""Input pipelines: distributed per-replica batches for training, plain batches for evaluate/predict."""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable

import ml_collections
import tensorflow as tf

from nntrain.data import cache, checks, preprocess, service, stream
from nntrain.data.sources import Source, open_source
from nntrain.data.spec import DatasetSpec
from nntrain.data.splits import Split
from nntrain.errors import NntrainError
from nntrain.logs import log

AUTOTUNE = tf.data.AUTOTUNE


@dataclasses.dataclass(frozen=True)
class Datasets:
    """What training reads: distributed datasets and the step counts that go with them."""

    train: tf.distribute.DistributedDataset  # repeated forever
    eval: tf.distribute.DistributedDataset | None  # one pass; None when data.eval_split is ''
    spec: DatasetSpec
    steps_per_epoch: int  # one pass over the train split (train.steps_per_epoch where it was not counted)
    eval_steps: int | None  # one pass over the eval split; None: not counted (Keras reads it to its end)
    per_replica_batch_size: int
    global_batch_size: int
    num_replicas: int


def build(data_config: ml_collections.ConfigDict, global_batch_size: int, strategy: tf.distribute.Strategy,
          seed: int = 0, skip_batches: int = 0, epochs: int | None = None,
          steps_per_epoch: int | None = None) -> Datasets:
    """Train and eval pipelines of `data_config`, batched per replica and distributed by `strategy`.

    Train: shard (by file where it can), cache, shuffle, repeat, batch (drop remainder), augment, preprocess,
    prefetch. Eval: shard, cache, batch (drop remainder only on TPUs, which need static shapes), [center crop,]
    preprocess, prefetch. Preprocessing maps whole batches: one map per example made mnist_mlp input-bound
    (docs/benchmarks.md). The train stream is exactly resumable (data/stream.py): `skip_batches` starts it after
    that many batches; `epochs` of `steps_per_epoch` steps (default one pass) size it, past that its passes
    repeat. Splits whose size is unknown (TFRecords without metadata.json) are counted with a full pass, unless
    `steps_per_epoch` is given.
    """
    num_replicas = strategy.num_replicas_in_sync
    if global_batch_size <= 0 or global_batch_size % num_replicas:
        raise NntrainError(f"train.batch_size={global_batch_size} is not a positive multiple of the "
                           f"{num_replicas} replicas: use e.g. --config.train.batch_size={num_replicas * 32}")
    source = open_source(data_config)
    train = _counted(source, _select(source, data_config.train_split), "train", steps_per_epoch)
    evaluation = None
    if data_config.eval_split:
        evaluation = _counted(source, _select(source, data_config.eval_split), "eval", steps_per_epoch)
    checks.check_splits(data_config, source.name, source.num_classes, train, evaluation, global_batch_size)
    prep = preprocess.fit(train.dataset, data_config, source.num_classes)
    static_shapes = isinstance(strategy, tf.distribute.TPUStrategy)
    cached = cache.plan(data_config, {"train": train, "eval": evaluation})
    steps_per_pass = _steps(train.num_examples, global_batch_size, drop_remainder=False) if train.num_examples \
        else steps_per_epoch
    pass_examples = train.num_examples or steps_per_epoch * global_batch_size

    def train_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        batch_size = ctx.get_per_replica_batch_size(global_batch_size)
        passes = _passes(train, ctx, data_config.train_split, cached["train"], seed)
        dataset = stream.shuffled_passes(passes, pass_examples // ctx.num_input_pipelines,
                                         data_config.shuffle_buffer, seed,
                                         (epochs or 1) * (steps_per_epoch or steps_per_pass) * batch_size)
        dataset = dataset.batch(batch_size, drop_remainder=True)
        dataset = preprocess.augment(dataset, data_config, seed).skip(skip_batches)
        dataset = dataset.map(prep.batch_fn, num_parallel_calls=AUTOTUNE)
        if data_config.service:  # the tf.data service's workers run all of the above
            dataset = service.distribute(dataset, data_config.service)
        return dataset.prefetch(AUTOTUNE).with_options(_options())

    def eval_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        dataset = _input(evaluation, ctx, data_config.eval_split, cached["eval"], None)
        dataset = dataset.batch(ctx.get_per_replica_batch_size(global_batch_size), drop_remainder=static_shapes)
        dataset = preprocess.eval_crop(dataset, data_config)
        return dataset.map(prep.batch_fn, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE).with_options(_options())

    eval_steps = None
    if evaluation is not None and evaluation.num_examples is not None:
        eval_steps = _steps(evaluation.num_examples, global_batch_size, drop_remainder=static_shapes)
        if eval_steps == 0:
            raise NntrainError(f"eval split '{data_config.eval_split}' has {evaluation.num_examples} examples, "
                               f"fewer than one batch of {global_batch_size}: use a larger split or batch")
    return Datasets(
        train=strategy.distribute_datasets_from_function(train_fn),
        eval=strategy.distribute_datasets_from_function(eval_fn) if evaluation is not None else None,
        spec=_spec(source, train, evaluation, prep),
        steps_per_epoch=steps_per_pass,
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
    prep = preprocess.fit(train.dataset, data_config, source.num_classes)
    dataset = preprocess.eval_crop(selected.dataset.batch(batch_size), data_config)
    dataset = dataset.map(prep.batch_fn, num_parallel_calls=AUTOTUNE)
    dataset = dataset.prefetch(AUTOTUNE).with_options(_options())
    return dataset, _spec(source, train, selected, prep)


def _select(source: Source, spec: str) -> Split:
    split = source.select(spec)
    if split.num_examples == 0:
        raise NntrainError(f"split '{spec}' of data.source={source.name} selects no examples: widen the slice")
    return split


def _counted(source: Source, split: Split, role: str, steps_per_epoch: int | None) -> Split:
    """The split with its size known: counted by a full pass unless train.steps_per_epoch makes that needless."""
    if split.num_examples is not None:
        return split
    if steps_per_epoch:
        log(f"{role} split of data.source={source.name}: no metadata.json, and train.steps_per_epoch="
            f"{steps_per_epoch} is set, so its records are not counted (no counting pass)")
        return split
    log(f"{role} split of data.source={source.name}: no metadata.json, so its records are counted with a full "
        "pass; `nntrain convert` writes metadata.json, or set train.steps_per_epoch to skip the pass")
    return split.counted()


def _input(split: Split, ctx: tf.distribute.InputContext, spec: str, cached: bool,
           seed: int | None) -> tf.data.Dataset:
    """This input pipeline's part of a split (`_reader`), its file order shuffled with `seed` (when not None);
    cached after its first pass."""
    dataset = _reader(split, ctx, spec)(seed)
    num_examples, pipelines = split.num_examples, ctx.num_input_pipelines
    if pipelines == 1 and num_examples is not None and dataset.cardinality() == tf.data.UNKNOWN_CARDINALITY:
        dataset = dataset.apply(tf.data.experimental.assert_cardinality(num_examples))  # Keras reads it
    return dataset.cache() if cached else dataset


def _passes(split: Split, ctx: tf.distribute.InputContext, spec: str, cached: bool,
            seed: int) -> Callable[[tf.Tensor], tf.data.Dataset] | tf.data.Dataset:
    """The train passes over this input pipeline's part of a split, as a function of each pass's seed: each reads
    its files in its seed's order; cached, the one dataset every pass reads, read in `seed`'s order and kept after
    its first pass."""
    read = _reader(split, ctx, spec)
    return read(seed).cache() if cached else read


def _reader(split: Split, ctx: tf.distribute.InputContext,
            spec: str) -> Callable[[int | tf.Tensor | None], tf.data.Dataset]:
    """This input pipeline's part of a split as a function of the seed its file order is shuffled with (None: in
    order): its own files where there are enough of them, else every n-th record. Logs which, once."""
    pipelines, index = ctx.num_input_pipelines, ctx.input_pipeline_id
    if split.shard is not None and len(split.files) >= pipelines:
        if pipelines > 1:
            mine = split.files[index::pipelines]
            shown = ", ".join(os.path.basename(f) for f in mine[:4]) + (", ..." if len(mine) > 4 else "")
            log(f"input pipeline {index} of {pipelines} reads {len(mine)} of the {len(split.files)} files of "
                f"split '{spec}': {shown}")
        return lambda seed: split.shard(pipelines, index, seed)
    dataset = split.dataset
    if pipelines > 1:
        dataset = dataset.shard(pipelines, index)
        if index == 0:
            log(f"split '{spec}' has {len(split.files) or 'no'} files for {pipelines} input pipelines: each "
                f"pipeline reads every record and keeps 1 in {pipelines}")
    return lambda _: dataset


def _options() -> tf.data.Options:
    """Deterministic order everywhere: the same seed gives the same run, and resumes replay the same data.

    tf.data's autotuning model is off: deleting an iterator (each fit's, at its end or on a preemption) waited for
    the model's thread, which sleeps in optimisation periods growing to 60 s, while holding the GIL: runs ended
    up to ~60 s after their last epoch (40.6 s measured) and ignored SIGTERM meanwhile. Without it AUTOTUNE maps
    run one call per core and prefetch buffers still grow on demand (docs/benchmarks.md has the figures).
    """
    options = tf.data.Options()
    options.deterministic = True
    options.autotune.enabled = False
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
        class_names=source.class_names,
    )
