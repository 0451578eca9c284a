"""TFRecord files of tf.train.Example (`tfrecord:PATTERN` or `tfrecord:DIR` holding metadata.json).

A feature spec says which features hold an example and its label. Presets (data.record_format):
  vector  float_list `x` (a flattened example of data.input_shape) and int64 `y` (its class)
  image   bytes `image/encoded` (JPEG/PNG/...) and int64 `image/class/label`, the TFDS / Model Garden layout
data.feature_key and data.label_key rename the features. `nntrain convert` writes DIR/SPLIT-0000i-of-0000N.tfrecord
shards and DIR/metadata.json (split sizes and files, shapes, class names, feature spec): with it, nothing is counted
and no other data flag is needed. Without it, a split is counted with one pass over its files when its size is needed,
its split names come from `{split}` in PATTERN (a DIR's files are read as DIR/{split}-*.tfrecord, convert's names),
and a PATTERN without `{split}` is the one split `train`: other split names are refused, never served the same
files (which would evaluate on training data); `train[90%:]` holds out part of it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import re

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain.data import images, splits
from nntrain.errors import NntrainError, op_message

METADATA = "metadata.json"
FORMAT = "nntrain.tfrecord/1"
PRESETS = {"vector": ("x", "y"), "image": ("image/encoded", "image/class/label")}
FORMATS = ("auto", *PRESETS)
MAX_OPEN_FILES = 16  # files one input pipeline reads at a time, interleaved
PARSE_BATCH = 256  # records parsed by one op: ~10x the records/s of one parse per record (benchmarks/)
_BARE_SPLIT = re.compile(r"\w+")
ONE_SPLIT = "train"  # the split of a pattern without {split}, as for csv:
DIR_PATTERN = "{split}-*.tfrecord"  # the files of a split in a directory without metadata.json, as convert names them


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """How one record becomes `(features, label)`."""

    record_format: str  # vector | image
    feature_key: str
    label_key: str
    shape: tuple[int, ...]  # the decoded example's shape
    label_dtype: str = "int64"  # int64: a class; float32: a regression target of label_shape
    label_shape: tuple[int, ...] = ()

    def features(self) -> dict[str, tf.io.FixedLenFeature]:
        stored = (tf.io.FixedLenFeature([], tf.string) if self.record_format == "image"
                  else tf.io.FixedLenFeature([int(np.prod(self.shape))], tf.float32))
        return {self.feature_key: stored,
                self.label_key: tf.io.FixedLenFeature(list(self.label_shape), tf.as_dtype(self.label_dtype))}

    def read(self, records: tf.data.Dataset) -> tf.data.Dataset:
        """Serialized records -> `(features, label)`, PARSE_BATCH records per tf.data element: parsed by one op,
        then images decoded to uint8 of `shape` (images.batch_decoder), vectors reshaped; then unbatched."""
        features = self.features()
        decode = images.batch_decoder(self.shape) if self.record_format == "image" else None

        @tf.autograph.experimental.do_not_convert
        def parse(batch: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            example = tf.io.parse_example(batch, features)
            stored = example[self.feature_key]
            return (decode(stored) if decode else tf.reshape(stored, [-1, *self.shape])), example[self.label_key]

        return records.batch(PARSE_BATCH).map(parse, num_parallel_calls=tf.data.AUTOTUNE).unbatch()


def count_records(files: list[str]) -> int:
    """The number of records in `files`: a full read of them."""
    try:
        return int(tf.data.TFRecordDataset(files).reduce(0, lambda n, _: n + 1))
    except tf.errors.OpError as e:
        raise NntrainError(f"TFRecord files {', '.join(files)} are unreadable ({op_message(e)}): "
                           "rewrite them") from e


def read_metadata(directory: str) -> dict | None:
    """DIR/metadata.json as written by `nntrain convert`, or None when there is none."""
    path = os.path.join(directory, METADATA)
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "rb") as f:
        raw = f.read()
    try:
        metadata = json.loads(raw)
    except ValueError as e:  # not JSON, or not UTF-8
        raise NntrainError(f"{path} is damaged ({e}): write the directory again with `nntrain convert`") from e
    found = metadata.get("format") if isinstance(metadata, dict) else type(metadata).__name__
    if found != FORMAT:
        raise NntrainError(f"{path} is not an nntrain metadata file (format {found!r}, expected "
                           f"{FORMAT!r}): write it with `nntrain convert`")
    return metadata


class TFRecordSource:
    """`tfrecord:PATTERN|DIR`: splits of Example records; whole splits are read by file, slices record by record."""

    def __init__(self, location: str, data_config: ml_collections.ConfigDict):
        self.name = f"tfrecord:{location}"
        self._metadata = read_metadata(location) if tf.io.gfile.isdir(location) else None
        if self._metadata is not None:
            try:
                spec = self._read_metadata(location, self._metadata)
            except (AttributeError, KeyError, TypeError, ValueError) as e:
                raise NntrainError(f"{os.path.join(location, METADATA)} is damaged ({type(e).__name__}: {e}): write "
                                   "the directory again with `nntrain convert`") from e
        else:
            pattern = os.path.join(location, DIR_PATTERN) if tf.io.gfile.isdir(location) else location
            self._pattern, self._files, self._sizes, self._file_sizes = pattern, {}, {}, {}
            self.class_names, self.num_classes = None, data_config.num_classes
            spec = None
        self.spec = self._configured(spec, data_config)

    def _read_metadata(self, location: str, meta: dict) -> FeatureSpec:
        """Split files and sizes, class names and the stored feature spec of metadata.json."""
        self._files = {split: [os.path.join(location, name) for name in info["files"]]
                       for split, info in meta["splits"].items()}
        self._sizes = {split: int(info["examples"]) for split, info in meta["splits"].items()}
        self._file_sizes = {split: list(map(int, info["file_examples"])) for split, info in meta["splits"].items()}
        for split, sizes in self._file_sizes.items():
            if len(sizes) != len(self._files[split]) or sum(sizes) != self._sizes[split]:
                raise ValueError(f"split '{split}': {len(self._files[split])} files and {self._sizes[split]} "
                                 f"examples, but file_examples {sizes}")
        self.class_names = tuple(meta["class_names"]) if meta.get("class_names") else None
        self.num_classes = meta.get("num_classes")
        return FeatureSpec(**{**meta["features"], "shape": tuple(meta["features"]["shape"]),
                              "label_shape": tuple(meta["features"]["label_shape"])})

    def files(self, split: str) -> list[str]:
        """The files of one split; NntrainError when there are none."""
        if self._metadata is not None:
            if split not in self._files:
                raise NntrainError(f"split '{split}' is not in {self.name} (metadata.json has "
                                   f"{', '.join(self._files)}): use one of those")
            return self._files[split]
        if "{split}" not in self._pattern and split != ONE_SPLIT:  # the same files would serve every split
            raise NntrainError(
                f"data.source={self.name} has no {{split}} in its file pattern (and no metadata.json), so it holds "
                f"one split, '{ONE_SPLIT}', not '{split}': hold out part of it (--config.data.train_split=train[:90%] "
                "--config.data.eval_split=train[90%:]) or name the split in the pattern (e.g. "
                "tfrecord:DIR/{split}-*.tfrecord)")
        if split not in self._files:
            pattern = self._pattern.replace("{split}", split)
            found = sorted(tf.io.gfile.glob(pattern))
            if not found:
                raise NntrainError(f"no TFRecord files match {pattern} (split '{split}' of data.source={self.name}): "
                                   "check the pattern and the split name" + (
                                       f"; a directory without {METADATA} holds a split's files as {DIR_PATTERN}: "
                                       "give a pattern (tfrecord:DIR/*.tfrecord, the split 'train') for other names"
                                       if self._pattern.endswith(DIR_PATTERN) else ""))
            self._files[split] = found
        return self._files[split]

    def select(self, spec: str) -> splits.Split:
        if _BARE_SPLIT.fullmatch(spec):  # a whole split: read by file, sized from metadata or counted on demand
            files, sizes = self.files(spec), self._file_sizes.get(spec)
            self._check_first_record(files[0])
            return splits.Split(self._read_files(files, sizes, 1, 0, None), self._sizes.get(spec),
                                files=tuple(files), shard=lambda n, i, seed: self._read_files(files, sizes, n, i, seed),
                                count=lambda: count_records(files))
        parts = splits.ranges(spec, _Counts(self), self.name)
        for split, _, _ in parts:
            self._check_first_record(self.files(split)[0])
        datasets = [tf.data.TFRecordDataset(self.files(split)).skip(start).take(stop - start)
                    for split, start, stop in parts]
        records = functools.reduce(tf.data.Dataset.concatenate, datasets)
        return splits.Split(self.spec.read(records), sum(stop - start for _, start, stop in parts))

    def size(self, split: str) -> int:
        if split not in self._sizes:
            self._sizes[split] = count_records(self.files(split))
        return self._sizes[split]

    def _read_files(self, files: list[str], sizes: list[int] | None, num_shards: int, index: int,
                    seed: int | None) -> tf.data.Dataset:
        """The examples of every num_shards-th file from `index`; `sizes` (examples per file) sets the cardinality."""
        names = tf.data.Dataset.from_tensor_slices(files).shard(num_shards, index)
        if seed is not None:
            names = names.shuffle(len(files), seed=seed, reshuffle_each_iteration=False)
        mine = len(files[index::num_shards])
        records = names.interleave(tf.data.TFRecordDataset, cycle_length=min(mine, MAX_OPEN_FILES), block_length=1,
                                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        examples = self.spec.read(records)
        if sizes:
            examples = examples.apply(tf.data.experimental.assert_cardinality(sum(sizes[index::num_shards])))
        return examples

    def _configured(self, stored: FeatureSpec | None, data_config: ml_collections.ConfigDict) -> FeatureSpec:
        """The stored spec (metadata.json), else data.record_format's preset; data.feature_key/label_key rename."""
        record_format = data_config.record_format
        if stored is None or record_format not in ("auto", stored.record_format):
            record_format = "vector" if record_format == "auto" else record_format
            shape = tuple(data_config.input_shape)
            if record_format == "image":
                shape = self._image_shape(data_config)
            stored = FeatureSpec(record_format, *PRESETS[record_format], shape)
        renamed = {key: data_config[key] for key in ("feature_key", "label_key") if data_config[key]}
        return dataclasses.replace(stored, **renamed)

    def _image_shape(self, data_config: ml_collections.ConfigDict) -> tuple[int, int, int]:
        if tuple(data_config.image_size) and data_config.channels:
            return (*data_config.image_size, data_config.channels)
        raise NntrainError(f"data.record_format=image for {self.name} without metadata.json needs the decoded "
                           "size: set --config.data.image_size=HEIGHT,WIDTH and --config.data.channels=1|3")

    def _check_first_record(self, path: str) -> None:
        """Parses the first record of a file, so that a missing or mistyped feature is named before training."""
        first = tf.data.TFRecordDataset([path]).take(1)
        try:
            raw = next(iter(first), None)
        except tf.errors.OpError as e:
            raise NntrainError(f"TFRecord file {path} is unreadable ({op_message(e)}): rewrite it") from e
        if raw is None:
            return
        try:
            tf.io.parse_example(raw[None], self.spec.features())  # eagerly: no iterator error on stderr
        except tf.errors.InvalidArgumentError as e:
            held = sorted(tf.train.Example.FromString(raw.numpy()).features.feature)
            spec = self.spec
            raise NntrainError(
                f"TFRecord file {path} does not hold feature '{spec.feature_key}' ({spec.record_format}: "
                f"{'encoded image bytes' if spec.record_format == 'image' else f'{int(np.prod(spec.shape))} floats'})"
                f" and label '{spec.label_key}' ({spec.label_dtype}); its records have {', '.join(held)}: set "
                "--config.data.feature_key/label_key or data.record_format (and data.input_shape)") from e


class _Counts(dict):
    """Split sizes for slicing, counted on first use."""

    def __init__(self, source: TFRecordSource):
        super().__init__()
        self._source = source

    def __missing__(self, split: str) -> int:
        return self._source.size(split)
