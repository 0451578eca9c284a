"""`nntrain convert`: the splits of any source as sharded Example TFRecords plus metadata.json.

    DIR/SPLIT-00000-of-0000N.tfrecord ...   example i of a split goes to shard i % N (every shard a uniform sample)
    DIR/metadata.json                        written last: split sizes and files, shapes, class names, feature spec

Image files stay encoded (their bytes are copied); uint8 image arrays are written as PNG; other numeric features
as float vectors. `tfrecord:DIR` reads the result back without counting and without other data flags. Refused:
more shards than a split has examples (as TFDS's writer: no empty shards), `text:` sources (their labels are token
sequences, which the records do not hold: train on the text files directly) and an output inside the source's
directory. Only what convert created is ever removed: a failed or interrupted convert removes its own output, and
a convert killed outright leaves `.nntrain-convert-partial` (the files it writes), so that the same command run
again clears them and starts over.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain import rundir
from nntrain.data import tfrecord
from nntrain.data.images import ImageFolderSource
from nntrain.data.sources import Source, open_source
from nntrain.errors import NntrainError
from nntrain.logs import log

_NAME = re.compile(r"\w+")
WRITE_BATCH = 256
PARTIAL = ".nntrain-convert-partial"  # in --output until metadata.json is written: the files this convert writes


def parse_split(arg: str) -> tuple[str, str]:
    """`train` -> (train, train); `val=train[90%:]` -> (val, train[90%:]): the shard name and the split spec."""
    name, sep, spec = arg.partition("=")
    spec = spec if sep else name
    if not _NAME.fullmatch(name) or not spec:
        raise NntrainError(f"--split={arg}: give a split name (train) or NAME=SPEC (val=train[90%:]), the name "
                           "made of letters, digits and _")
    return name, spec


def convert(data_config: ml_collections.ConfigDict, split_args: list[str], output: str, shards: int) -> dict:
    """Writes each split of `data_config.source` to `shards` TFRecord files in `output`; returns the metadata."""
    if not split_args:
        raise NntrainError("no split to convert: pass --split=NAME (repeat it for several), e.g. --split=train")
    if shards < 1:
        raise NntrainError(f"--shards={shards}: it must be >= 1")
    parsed = [parse_split(arg) for arg in split_args]
    names = [name for name, _ in parsed]
    if twice := [name for name in names if names.count(name) > 1]:
        raise NntrainError(f"--split names '{twice[0]}' more than once: give each split once (NAME=SPEC to rename one)")
    wanted = dict(parsed)
    rundir.check(output, "output")
    _check_outside(output, data_config.source)
    files = {name: [f"{name}-{i:05d}-of-{shards:05d}.tfrecord" for i in range(shards)] for name in wanted}
    listed = [f for names in files.values() for f in names]
    _clear_interrupted(output, listed)
    if rundir.listdir(output):
        raise NntrainError(f"--output={output} is not empty: choose a new directory")
    source = open_source(data_config)
    records = {name: _records(source, spec) for name, spec in wanted.items()}  # every split checked before writing
    smallest, (_, _, fewest) = min(records.items(), key=lambda item: item[1][2])
    if shards > fewest:  # as TFDS's writer: no empty shards
        raise NntrainError(f"--shards={shards} is more than the {fewest} examples of split '{smallest}', which would "
                           f"leave shards empty: use --shards={fewest} or fewer")
    features = next(iter(records.values()))[1]
    metadata = {"format": tfrecord.FORMAT, "source": source.name, "features": dataclasses.asdict(features),
                "num_classes": source.num_classes,
                "class_names": list(source.class_names) if source.class_names else None, "splits": {}}
    created = rundir.first_missing(output)
    rundir.makedirs(output)
    rundir.write_json(rundir.join(output, PARTIAL), listed)
    done = False
    try:
        for name, (dataset, _, _) in records.items():
            per_file = _write(dataset, [rundir.join(output, f) for f in files[name]], features)
            metadata["splits"][name] = {"examples": sum(per_file), "files": files[name], "file_examples": per_file,
                                        "spec": wanted[name]}
        rundir.write_text(rundir.join(output, tfrecord.METADATA), json.dumps(metadata, indent=2) + "\n")
        rundir.remove(rundir.join(output, PARTIAL))
        done = True
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; the partial output was removed (--output={output} is as before): run the "
                          "same command again to convert from the start") from None
    finally:
        if not done:  # only what this command wrote: the directories it created, else its own files
            for path in [created] if created else [rundir.join(output, name) for name in _own_files(listed)]:
                rundir.remove(path)
    return metadata


def _own_files(listed: list[str]) -> set[str]:
    """The names a convert writing the shards `listed` may leave in its output (commit temporaries too)."""
    names = {*listed, PARTIAL, tfrecord.METADATA}
    return names | {f"{rundir.TMP_PREFIX}{name}" for name in names}


class Interrupted(NntrainError):
    """Ctrl-C during convert: its partial output is removed, so the command starts over (exit code 130)."""

    exit_code = 130


def _check_outside(output: str, source: str) -> None:
    """The output may not lie in the source's directory: the source would then read (or list) the shards."""
    location = os.path.expanduser(source.partition(":")[2])
    if rundir.is_local(output) and rundir.is_local(location) and os.path.isdir(location):
        inside = os.path.realpath(output)
        root = os.path.realpath(location)
        if inside == root or inside.startswith(root.rstrip(os.sep) + os.sep):
            raise NntrainError(f"--output={output} lies inside the source's directory {location}, which it would "
                               "change (its files would become part of the source): choose a directory outside it")


def _clear_interrupted(output: str, names: list[str]) -> None:
    """Removes the output a killed convert of the same splits and shards left (its PARTIAL list names every file it
    writes); a directory holding anything else is left alone."""
    present = set(rundir.listdir(output))
    if PARTIAL not in present:
        return
    listed = rundir.read_json(rundir.join(output, PARTIAL))
    if not (isinstance(listed, list) and set(listed) == set(names) and present <= _own_files(listed)):
        raise NntrainError(f"--output={output} holds the partial output of an interrupted convert of other splits or "
                           "shards (or other files too): run that command again, or choose a new directory")
    log(f"removing the partial output of an interrupted convert in {output}; converting from the start")
    for name in present:
        rundir.remove(rundir.join(output, name))


def _records(source: Source, spec: str) -> tuple[tf.data.Dataset, tfrecord.FeatureSpec, int]:
    """A split's `(stored features, label)`, how they are stored (image files' undecoded bytes, uint8 images as
    PNG, other numbers as float vectors) and how many examples it holds."""
    split = source.select(spec).counted()
    if isinstance(source, ImageFolderSource):
        dataset, record_format, shape = source.records(spec), "image", source.shape
    else:
        dataset = split.dataset
        features = dataset.element_spec[0]
        if features.dtype == tf.string:
            raise NntrainError(f"data.source={source.name} holds text; convert writes images and numbers only")
        record_format, shape = "vector", tuple(features.shape)
        if features.dtype == tf.uint8 and features.shape.rank == 3:
            record_format = "image"
            dataset = dataset.map(lambda x, y: (tf.io.encode_png(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    label = dataset.element_spec[1]
    if label.dtype.is_integer and label.shape.rank:
        raise NntrainError(f"data.source={source.name} gives a sequence of class ids per example (e.g. a text's next "
                           "tokens), but convert's records hold one class per example, so training on them would "
                           f"fail: train on data.source={source.name} directly (it streams its files)")
    label_dtype = "int64" if label.dtype.is_integer else "float32"
    label_shape = tuple(label.shape) if label_dtype == "float32" else ()
    return dataset, tfrecord.FeatureSpec(record_format, *tfrecord.PRESETS[record_format], shape, label_dtype,
                                         label_shape), split.num_examples


def _write(dataset: tf.data.Dataset, paths: list[str], spec: tfrecord.FeatureSpec) -> list[int]:
    """Writes example i to paths[i % len(paths)]; returns how many examples each file holds."""
    writers = [tf.io.TFRecordWriter(path) for path in paths]
    count = 0
    try:
        for batch in dataset.batch(WRITE_BATCH).as_numpy_iterator():  # one iterator call per batch, not per example
            for features, label in zip(*batch):
                stored = (tf.train.Feature(bytes_list=tf.train.BytesList(value=[features]))
                          if spec.record_format == "image"
                          else tf.train.Feature(float_list=tf.train.FloatList(value=np.ravel(features))))
                label = np.ravel(label)
                target = (tf.train.Feature(int64_list=tf.train.Int64List(value=label)) if spec.label_dtype == "int64"
                          else tf.train.Feature(float_list=tf.train.FloatList(value=label)))
                example = tf.train.Example(features=tf.train.Features(
                    feature={spec.feature_key: stored, spec.label_key: target}))
                writers[count % len(writers)].write(example.SerializeToString())
                count += 1
    finally:
        for writer in writers:
            writer.close()
    return [len(range(i, count, len(paths))) for i in range(len(paths))]
