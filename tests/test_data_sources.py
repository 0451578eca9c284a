"""Image folders, CSV files, Example TFRecords and `nntrain convert`, on real data (MNIST PNGs, scikit-learn digits)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

import nntrain
from nntrain import cli, data
from nntrain.config import base_config
from nntrain.data import convert, csv_source, idx, pipeline, sources, stream, tfrecord
from nntrain.errors import NntrainError

REPO = Path(__file__).resolve().parent.parent

MNIST_DIR = os.environ.get("NNTRAIN_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
needs_mnist = pytest.mark.skipif(not os.path.isdir(MNIST_DIR), reason=f"no MNIST IDX files in {MNIST_DIR}")
# 3 epochs of batch 32 reach the 10 epochs of 128's accuracy (on the PNGs: 0.967 against 0.969) in half the time.
MLP = {"data.train_split": "train", "data.eval_split": "test", "train.epochs": 3, "train.batch_size": 32}


def write_pngs(root: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for i, (image, label) in enumerate(zip(images, labels)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"{i:05d}.png")


@pytest.fixture(scope="session")
def mnist_pngs(tmp_path_factory) -> Path:
    """The MNIST test set as PNG files: the first 8,000 in train/<class>/, the last 2,000 in test/<class>/."""
    images, labels = idx.load(MNIST_DIR)["test"]
    root = tmp_path_factory.mktemp("mnist_png")
    write_pngs(root / "train", images[:8000], labels[:8000])
    write_pngs(root / "test", images[8000:], labels[8000:])
    return root


@pytest.fixture(scope="session")
def mnist_records(mnist_pngs, tmp_path_factory) -> Path:
    """`mnist_pngs` converted by `nntrain convert` into 4 TFRecord shards of PNG bytes per split."""
    output = tmp_path_factory.mktemp("mnist_records") / "records"
    with pytest.raises(SystemExit) as exit_info:
        cli.run(["nntrain", "convert", f"--source=images:{mnist_pngs}", "--split=train", "--split=test",
                 f"--output={output}", "--shards=4"])
    assert exit_info.value.code in (0, None)
    return output


@pytest.fixture
def colour_folder(tmp_path) -> Path:
    """Class folders without split folders: 3 classes of 10 RGB images of 12x16, each a class's solid colour."""
    for label, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        folder = tmp_path / "colours" / f"class_{label}"
        folder.mkdir(parents=True)
        for i in range(10):
            Image.new("RGB", (16, 12), colour).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return tmp_path / "colours"


def test_images_class_folders_are_one_shuffled_balanced_split(colour_folder, data_config):
    data_config.source = f"images:{colour_folder}"
    data_config.image_size = (8, 8)
    source = sources.open_source(data_config)
    assert source.class_names == ("class_0", "class_1", "class_2") and source.num_classes == 3
    first, rest = source.select("train[:50%]"), source.select("train[50%:]")
    assert (first.num_examples, rest.num_examples) == (15, 15)
    images, labels = zip(*first.dataset.as_numpy_iterator())
    assert images[0].shape == (8, 8, 3) and images[0].dtype == np.uint8  # resized in tf.data
    assert all(np.bincount(labels, minlength=3) >= 3)  # shuffled before slicing: every class in both halves
    for image, label in zip(images, labels):  # each class's colour survives decoding and resizing
        assert int(np.argmax(image.reshape(-1, 3).mean(axis=0))) == label
    data_config.channels = 1
    assert sources.open_source(data_config).select("train").dataset.element_spec[0].shape == (8, 8, 1)


def test_image_pipeline_with_random_resized_crop_has_static_shapes(colour_folder, data_config):
    data_config.source = f"images:{colour_folder}"
    data_config.train_split, data_config.eval_split = "train[:20]", "train[20:]"
    data_config.augment = "random_resized_crop"
    datasets = data.build(data_config, 4, tf.distribute.get_strategy())
    x, y = next(iter(datasets.train))
    assert x.shape == (4, 12, 16, 3) and x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0
    for x, _ in datasets.eval:
        assert x.shape[1:] == (12, 16, 3)
    assert datasets.spec.class_names == ("class_0", "class_1", "class_2")


def test_records_decode_as_the_folder_and_augment_reproducibly(colour_folder, tmp_path, data_config):
    """Shards of PNG and JPEG bytes, decoded and resized a batch at a time, give the folder's pixels; training's
    augmented stream is the same for the same seed, and skipping batches continues it exactly (resume)."""
    data_config.source, data_config.image_size = f"images:{colour_folder}", (8, 8)
    convert.convert(data_config, ["train"], str(tmp_path / "records"), shards=2)
    folder = sorted((x.tobytes(), int(y)) for x, y in sources.open_source(data_config).select("train").dataset
                    .as_numpy_iterator())
    data_config.source = f"tfrecord:{tmp_path / 'records'}"
    records = sources.open_source(data_config).select("train").dataset
    assert records.element_spec[0].shape == (8, 8, 3)
    assert sorted((x.tobytes(), int(y)) for x, y in records.as_numpy_iterator()) == folder
    data_config.train_split, data_config.eval_split, data_config.augment = "train", "", "random_resized_crop"
    strategy = tf.distribute.get_strategy()

    def batches(seed: int, skip: int = 0) -> list[bytes]:
        stream = data.build(data_config, 4, strategy, seed=seed, skip_batches=skip).train
        return [x.numpy().tobytes() for x, _ in itertools.islice(stream, 10 - skip)]

    first = batches(seed=1)
    assert batches(seed=1) == first and batches(seed=1, skip=6) == first[6:] and batches(seed=2) != first


@needs_mnist
@pytest.mark.slow
def test_mnist_pngs_train_mlp(mnist_pngs, tmp_path):
    model_dir = tmp_path / "run"
    config = nntrain.load_config("mnist_mlp", {"data.source": f"images:{mnist_pngs}", **MLP})
    metrics = nntrain.train(config, str(model_dir), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] >= 0.96
    spec = json.loads((model_dir / "dataset.json").read_text())
    assert spec["class_names"] == [str(d) for d in range(10)] and spec["train_examples"] == 8000
    nntrain.export(str(model_dir), str(tmp_path / "export"))
    assert json.loads((tmp_path / "export" / "dataset.json").read_text()) == spec  # class names in the export


def digits_csv(path: Path) -> Path:
    """scikit-learn's 1,797 digits (8x8, values 0-16) as a CSV with columns p0..p63 and `digit`, rows shuffled."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))
    rows = [",".join([f"p{i}" for i in range(64)] + ["digit"])]
    rows += [",".join(f"{v:g}" for v in x) + f",{y}" for x, y in zip(digits.data[order], digits.target[order])]
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.mark.slow
def test_csv_digits_trains_mlp(tmp_path):
    csv = digits_csv(tmp_path / "digits.csv")
    config = nntrain.load_config("mnist_mlp", {"data.source": f"csv:{csv}", "data.label_column": "digit",
                                               "data.train_split": "train[:80%]", "data.eval_split": "train[80%:]",
                                               "train.epochs": 3, "train.batch_size": 16})
    metrics = nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] >= 0.95  # on the held-out 20%


def test_csv_parsed_in_blocks_names_a_bad_cell_past_the_first_block(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_source, "PARSE_ROWS", 2)
    rows = ["1,2,0", "3,4,1", "5,6,0", "7,8,1", "9,x9,0"]
    (tmp_path / "blocks.csv").write_text("a,b,label\n" + "\n".join(rows[:4]) + "\n")
    (x, y), = csv_source.load(str(tmp_path / "blocks.csv"), "label")[0].values()
    assert x.tolist() == [[1, 2], [3, 4], [5, 6], [7, 8]] and y.tolist() == [0, 1, 0, 1]
    (tmp_path / "blocks.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(NntrainError, match=r"blocks.csv, row 6, column 'b': 'x9' is not a number"):
        csv_source.load(str(tmp_path / "blocks.csv"), "label")


@pytest.mark.parametrize("text", ["label,a,b\n0,1,2\n1,3,4\n\n", "label,a,b\r\n0,1,2\r\n\r\n1,3,4\r\n",
                                  "\ufefflabel,a,b\n0,1,2\n1,3,4\n"],
                         ids=["trailing blank line", "blank line inside, CRLF", "Excel CSV UTF-8 byte order mark"])
def test_csv_skips_blank_lines_and_a_byte_order_mark(tmp_path, text):
    (tmp_path / "rows.csv").write_bytes(text.encode())
    (x, y), = csv_source.load(str(tmp_path / "rows.csv"), "label")[0].values()
    assert x.tolist() == [[1, 2], [3, 4]] and y.tolist() == [0, 1]


def test_csv_rows_are_numbered_in_the_file_across_blank_lines(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_source, "PARSE_ROWS", 2)
    (tmp_path / "gaps.csv").write_text("a,b,label\n1,2,0\n\n3,4,1\n\n5,x5,0\n")
    with pytest.raises(NntrainError, match=r"gaps.csv, row 6, column 'b': 'x5' is not a number"):
        csv_source.load(str(tmp_path / "gaps.csv"), "label")


def test_csv_splits_regression_and_text_labels(tmp_path, data_config):
    for split, rows in {"train": ["1.5,2,0.25", "3,4,1.75"], "test": ["5,6,-2"]}.items():
        (tmp_path / f"houses_{split}.csv").write_text("rooms,age,price\n" + "\n".join(rows) + "\n")
    data_config.source = f"csv:{tmp_path}/houses_{{split}}.csv"
    data_config.label_column = "price"
    source = sources.open_source(data_config)
    assert source.num_classes is None  # non-integer labels: regression
    (x, y), = source.select("test").dataset.as_numpy_iterator()
    assert x.tolist() == [5.0, 6.0] and y == -2.0
    (tmp_path / "flowers.csv").write_text("width,species\n1,setosa\n2,virginica\n3,setosa\n")
    data_config.source, data_config.label_column = f"csv:{tmp_path}/flowers.csv", "species"
    source = sources.open_source(data_config)
    assert source.class_names == ("setosa", "virginica")
    assert [int(y) for _, y in source.select("train").dataset.as_numpy_iterator()] == [0, 1, 0]


@needs_mnist
def test_convert_writes_shards_and_metadata(mnist_records, mnist_pngs):
    metadata = json.loads((mnist_records / "metadata.json").read_text())
    assert metadata["splits"]["train"]["files"] == [f"train-{i:05d}-of-00004.tfrecord" for i in range(4)]
    assert {name: info["examples"] for name, info in metadata["splits"].items()} == {"train": 8000, "test": 2000}
    assert metadata["features"]["shape"] == [28, 28, 1] and metadata["class_names"] == [str(d) for d in range(10)]
    shard = str(mnist_records / "test-00000-of-00004.tfrecord")
    first = tf.train.Example.FromString(next(iter(tf.data.TFRecordDataset(shard))).numpy())
    encoded = first.features.feature["image/encoded"].bytes_list.value[0]
    label = first.features.feature["image/class/label"].int64_list.value[0]
    png_files = {p.read_bytes(): int(p.parent.name) for p in (mnist_pngs / "test").rglob("*.png")}
    assert png_files[encoded] == label  # the PNG file's own bytes, still encoded


@needs_mnist
@pytest.mark.slow
def test_mnist_records_train_mlp_without_counting(mnist_records, tmp_path, monkeypatch):
    def no_counting(files):
        raise AssertionError(f"a counting pass over {files}")

    monkeypatch.setattr(tfrecord, "count_records", no_counting)
    config = nntrain.load_config("mnist_mlp", {"data.source": f"tfrecord:{mnist_records}", **MLP})
    metrics = nntrain.train(config, str(tmp_path / "run"), strategy="cpu", verbose=0)
    assert metrics["val_accuracy"] >= 0.96


@needs_mnist
def test_records_without_metadata_skip_counting_when_steps_are_given(mnist_records, data_config, monkeypatch):
    lines, counted = [], []
    monkeypatch.setattr(pipeline, "log", lines.append)
    monkeypatch.setattr(tfrecord, "count_records", lambda files: counted.append(files) or 1000)
    data_config.source = f"tfrecord:{mnist_records}/{{split}}-*.tfrecord"  # a pattern: no metadata.json
    data_config.record_format, data_config.image_size, data_config.channels = "image", (28, 28), 1
    datasets = data.build(data_config, 100, tf.distribute.get_strategy(), steps_per_epoch=7)
    assert not counted and datasets.steps_per_epoch == 7 and datasets.spec.train_examples is None
    assert any("no counting pass" in line and "train.steps_per_epoch=7" in line for line in lines)
    x, y = next(iter(datasets.train))
    assert x.shape == (100, 28, 28, 1) and y.shape == (100,)
    data.build(data_config, 100, tf.distribute.get_strategy())  # no steps_per_epoch: counted, and said so
    assert len(counted) == 2 and any("counted with a full pass" in line for line in lines)


@needs_mnist
def test_files_are_sharded_by_file_or_record(mnist_records, data_config, monkeypatch):
    lines = []
    monkeypatch.setattr(pipeline, "log", lines.append)
    data_config.source = f"tfrecord:{mnist_records}"
    split = sources.open_source(data_config).select("test")
    parts = [pipeline._input(split, tf.distribute.InputContext(2, i, 2), "test", False, None) for i in range(2)]
    images = [[x.tobytes() for x, _ in part.as_numpy_iterator()] for part in parts]
    assert len(images[0]) == len(images[1]) == 1000 and not set(images[0]) & set(images[1])
    assert lines[1].startswith("input pipeline 1 of 2 reads 2 of the 4 files of split 'test': test-00001-of-00004")
    # Each train pass reads the files in the order of its own seed (data/stream.py; a buffer of 1 keeps the
    # examples in file order): the same passes from every iterator, and a pass's first 4 records (one per file: 4
    # files interleaved) give its file order; 4 passes in one order by chance: p = 24^-3.
    train = stream.shuffled_passes(pipeline._passes(split, tf.distribute.InputContext(), "test", False, 0), 2000, 1,
                                   0, 6000)
    passes = [[x.tobytes() for x in xs] for xs, _ in train.batch(2000).take(4).as_numpy_iterator()]
    assert [[x.tobytes() for x in xs] for xs, _ in train.batch(2000).take(4).as_numpy_iterator()] == passes
    in_order = sorted(x.tobytes() for x, _ in split.dataset.as_numpy_iterator())
    assert all(sorted(one_pass) == in_order for one_pass in passes)
    assert len({tuple(one_pass[:4]) for one_pass in passes}) > 1
    lines.clear()
    stream.shuffled_passes(pipeline._passes(split, tf.distribute.InputContext(2, 1, 2), "test", False, 0), 1000, 1, 0,
                           8000)
    assert len(lines) == 1 and lines[0].startswith("input pipeline 1 of 2 reads")  # once, not once per pass
    lines.clear()
    fifths = [pipeline._input(split, tf.distribute.InputContext(5, i, 1), "test", False, None) for i in range(5)]
    assert sum(1 for part in fifths for _ in part) == 2000
    assert lines == ["split 'test' has 4 files for 5 input pipelines: each pipeline reads every record and keeps "
                     "1 in 5"]


@needs_mnist
@pytest.mark.slow
def test_launch_two_workers_read_two_distinct_files_each(mnist_records, tmp_path):
    run = subprocess.run(
        [sys.executable, "-m", "nntrain.cli", "launch", "--workers=2", "--", "train", "--experiment=mnist_mlp",
         f"--model_dir={tmp_path / 'mw'}", f"--config.data.source=tfrecord:{mnist_records}",
         "--config.data.train_split=train", "--config.data.eval_split=test", "--config.train.epochs=1",
         "--config.train.steps_per_epoch=4", "--config.train.batch_size=64"],
        cwd=REPO, capture_output=True, text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    read = {}
    for line in run.stdout.splitlines():
        if "reads 2 of the 4 files of split 'train'" in line:
            read[line.split("]")[0]] = set(line.split(": ")[-1].split(", "))
    assert sorted(read) == ["[worker 0", "[worker 1"]
    assert all(len(files) == 2 for files in read.values()) and not read["[worker 0"] & read["[worker 1"]


def test_convert_csv_to_a_bucket_and_read_it_back(tmp_path, data_config):
    """ram:// stands in for gs://: conversion and reading go through tf.io.gfile only."""
    csv = digits_csv(tmp_path / "digits.csv")
    data_config.source, data_config.label_column = f"csv:{csv}", "digit"
    metadata = convert.convert(data_config, ["train=train[:1000]", "test=train[1000:]"], "ram://bucket/digits", 3)
    assert metadata["features"]["record_format"] == "vector" and tuple(metadata["features"]["shape"]) == (64,)
    assert metadata["splits"]["test"]["file_examples"] == [266, 266, 265]
    assert not list(tmp_path.glob("**/*.tfrecord"))
    read = base_config().data
    read.source = "tfrecord:ram://bucket/digits"
    source = sources.open_source(read)
    original = sources.open_source(data_config).select("train[1000:]")
    assert source.num_classes == 10 and source.select("test").num_examples == 797
    expected = sorted((x.tobytes(), int(y)) for x, y in original.dataset.as_numpy_iterator())
    assert sorted((x.tobytes(), int(y)) for x, y in source.select("test").dataset.as_numpy_iterator()) == expected


@needs_mnist
def test_idx_and_npz_sources_read_a_bucket(tmp_path, data_config):
    """ram:// stands in for gs://: the IDX (gzipped) and npz loaders read through tf.io.gfile, not open()."""
    bucket = "ram://bucket/mnist"
    for name in os.listdir(MNIST_DIR):
        tf.io.gfile.copy(os.path.join(MNIST_DIR, name), f"{bucket}/{name}", overwrite=True)
    data_config.source = f"idx:{bucket}"
    x, y = idx.load(MNIST_DIR)["test"]
    source = sources.open_source(data_config)
    assert source.num_classes == 10 and source.select("test").num_examples == len(y) == 10_000
    first = next(source.select("test[:1]").dataset.as_numpy_iterator())
    assert np.array_equal(first[0][..., 0], x[0]) and first[1] == y[0]
    np.savez(tmp_path / "mnist.npz", x_train=x[:100], y_train=y[:100], x_test=x[100:150], y_test=y[100:150])
    tf.io.gfile.copy(str(tmp_path / "mnist.npz"), "ram://bucket/mnist.npz", overwrite=True)
    data_config.source = "npz:ram://bucket/mnist.npz"
    source = sources.open_source(data_config)
    assert source.select("train").num_examples == 100 and source.select("test").num_examples == 50
    data_config.source = "npz:ram://bucket/none.npz"
    with pytest.raises(NntrainError, match="no such file"):
        sources.open_source(data_config)
    data_config.source = "idx:ram://bucket/none"
    with pytest.raises(NntrainError, match="no such directory"):
        sources.open_source(data_config)
