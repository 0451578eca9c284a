"""nntrain.data: sources, split slicing, preprocessing and distributed pipelines, on tiny data."""

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from nntrain import data
from nntrain.data import cache, pipeline, preprocess, sources, splits, stream
from nntrain.errors import NntrainError

MNIST_DIR = os.environ.get("NNTRAIN_MNIST_DIR", str(Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"))
MNIST_IMAGES = os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz")
needs_mnist = pytest.mark.skipif(not os.path.isfile(MNIST_IMAGES), reason=f"no MNIST IDX files in {MNIST_DIR}")


@pytest.fixture(scope="module")
def strategy():
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])


def examples(dataset):
    """All (features, labels) of a batched dataset as two numpy arrays."""
    batches = list(dataset.as_numpy_iterator())
    return np.concatenate([x for x, _ in batches]), np.concatenate([y for _, y in batches])


def replica_batches(strategy, distributed_batch):
    """Each replica's part of one distributed (features, labels) batch."""
    features, labels = distributed_batch
    return list(zip(strategy.experimental_local_results(features), strategy.experimental_local_results(labels)))


# --- idx -------------------------------------------------------------------------------------------------

@needs_mnist
@pytest.mark.fast
def test_idx_mnist_slices(data_config):
    data_config.source = f"idx:{MNIST_DIR}"
    data_config.train_split = "test[:8000]"
    evaluation, spec = data.load_split(data_config, "test[8000:]", batch_size=1000)
    x, y = examples(evaluation)
    assert (len(x), len(y)) == (2000, 2000)
    assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and set(np.unique(y)) == set(range(10))
    assert spec.input_shape == (28, 28, 1) and spec.input_dtype == "float32" and spec.num_classes == 10
    assert (spec.train_examples, spec.eval_examples) == (8000, 2000)


def write_idx(path, magic, dims, payload):
    header = bytes(magic) + b"".join(int(d).to_bytes(4, "big") for d in dims)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + payload)


def write_small_idx(directory, images_payload=None):
    """A valid 5-image test split, unless `images_payload` replaces the image bytes."""
    images = np.arange(5 * 4 * 4, dtype=np.uint8).tobytes() if images_payload is None else images_payload
    write_idx(directory / "t10k-images-idx3-ubyte", [0, 0, 8, 3], [5, 4, 4], images)
    write_idx(directory / "t10k-labels-idx1-ubyte.gz", [0, 0, 8, 1], [5], bytes([0, 1, 2, 1, 0]))


def test_idx_small_raw_and_gz(tmp_path, data_config):
    write_small_idx(tmp_path)
    data_config.source = f"idx:{tmp_path}"
    data_config.train_split = "test"
    dataset, spec = data.load_split(data_config, "test[1:3]", batch_size=2)
    x, y = examples(dataset)
    assert x.shape == (2, 4, 4, 1) and list(y) == [1, 2]
    assert spec.num_classes == 3 and spec.train_examples == 5


@pytest.mark.parametrize("corrupt", ["truncated data", "bad magic", "truncated header", "truncated gzip"])
@pytest.mark.fast
def test_idx_corrupt_file_is_named(tmp_path, data_config, corrupt):
    write_small_idx(tmp_path, images_payload=bytes(10) if corrupt == "truncated data" else None)
    bad = tmp_path / "t10k-images-idx3-ubyte"
    if corrupt == "bad magic":
        bad.write_bytes(b"\x12\x34" + bad.read_bytes()[2:])
    elif corrupt == "truncated header":
        bad.write_bytes(bad.read_bytes()[:7])
    elif corrupt == "truncated gzip":
        bad = tmp_path / "t10k-labels-idx1-ubyte.gz"
        bad.write_bytes(bad.read_bytes()[:-12])
    data_config.source = f"idx:{tmp_path}"
    with pytest.raises(NntrainError, match=str(bad)):
        data.load_split(data_config, "test", batch_size=2)


def test_idx_missing_directory(tmp_path, data_config):
    data_config.source = f"idx:{tmp_path / 'nowhere'}"
    with pytest.raises(NntrainError, match="no such directory"):
        data.load_split(data_config, "test", batch_size=2)


# --- npz, tfrecord -----------------------------------------------------------------------------------------

@pytest.mark.fast
def test_npz_keras_layout(tmp_path, data_config):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x_train=rng.integers(0, 256, (12, 6, 6), dtype=np.uint8), y_train=np.arange(12) % 3,
             x_test=rng.integers(0, 256, (4, 6, 6), dtype=np.uint8), y_test=np.arange(4) % 3)
    data_config.source = f"npz:{path}"
    dataset, spec = data.load_split(data_config, "test", batch_size=3)
    x, y = examples(dataset)
    assert x.shape == (4, 6, 6, 1) and x.dtype == np.float32 and x.max() <= 1.0
    assert list(y) == [0, 1, 2, 0] and y.dtype == np.int32
    assert spec.num_classes == 3 and (spec.train_examples, spec.eval_examples) == (12, 4)


def test_npz_missing_arrays(tmp_path, data_config):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.zeros((2, 2)), y_train=np.zeros(2))
    data_config.source = f"npz:{path}"
    with pytest.raises(NntrainError, match="x_test, y_test"):
        data.load_split(data_config, "test", batch_size=2)


def write_tfrecord(path, features, labels):
    with tf.io.TFRecordWriter(str(path)) as writer:
        for x, y in zip(features, labels):
            example = tf.train.Example(features=tf.train.Features(feature={
                "x": tf.train.Feature(float_list=tf.train.FloatList(value=x.ravel())),
                "y": tf.train.Feature(int64_list=tf.train.Int64List(value=[y])),
            }))
            writer.write(example.SerializeToString())


def test_a_record_directory_without_metadata_keeps_its_splits_apart(tmp_path, data_config):
    """Convert's shard names without metadata.json: the eval split reads test-* only, never the train files."""
    for split, count in (("train", 6), ("test", 3)):
        write_tfrecord(tmp_path / f"{split}-00000-of-00001.tfrecord", np.zeros((count, 2)), [0] * count)
    data_config.source, data_config.input_shape, data_config.num_classes = f"tfrecord:{tmp_path}", (2,), 2
    dataset, _ = data.load_split(data_config, "test", batch_size=10)
    assert len(examples(dataset)[1]) == 3


def test_tfrecord_split_pattern(tmp_path, data_config):
    rng = np.random.default_rng(0)
    for split, count in (("train", 6), ("test", 3)):
        for shard in range(2):
            write_tfrecord(tmp_path / f"d-{split}-{shard}.tfrecord", rng.random((count, 2, 3)), [shard] * count)
    data_config.source = f"tfrecord:{tmp_path}/d-{{split}}-*.tfrecord"
    data_config.input_shape = (2, 3)
    data_config.num_classes = 2
    dataset, spec = data.load_split(data_config, "test[2:]+train[:1]", batch_size=10)
    x, y = examples(dataset)
    assert x.shape == (5, 2, 3) and x.dtype == np.float32 and list(y) == [0, 1, 1, 1, 0]
    assert spec.input_shape == (2, 3) and spec.num_classes == 2 and spec.eval_examples == 5
    assert spec.train_examples is None  # whole splits are not counted where nothing needs their size

    with pytest.raises(NntrainError, match="no TFRecord files match .*d-validation-"):
        data.load_split(data_config, "validation", batch_size=2)
    data_config.input_shape = (7,)
    with pytest.raises(NntrainError, match="input_shape"):
        data.load_split(data_config, "test", batch_size=2)


# --- generated and synthetic ---------------------------------------------------------------------------------

@pytest.mark.fast
def test_xor(data_config):
    data_config.source = "generated:xor"
    dataset, spec = data.load_split(data_config, "test", batch_size=4)
    x, y = examples(dataset)
    assert x.dtype == np.float32 and x.shape == (4, 2) and y.dtype == np.float32 and y.shape == (4, 1)
    np.testing.assert_array_equal(y[:, 0], np.logical_xor(x[:, 0], x[:, 1]))
    assert spec.num_classes is None and spec.input_shape == (2,)


def test_quadratic_deterministic_and_split_seeds(data_config):
    data_config.source = "generated:quadratic"
    data_config.num_examples = 50
    x, y = examples(data.load_split(data_config, "train", batch_size=16)[0])
    assert x.shape == y.shape == (50, 1)
    np.testing.assert_allclose(y, x ** 2, rtol=1e-6)
    x_again, _ = examples(data.load_split(data_config, "train", batch_size=16)[0])
    x_test, _ = examples(data.load_split(data_config, "test", batch_size=16)[0])
    np.testing.assert_array_equal(x, x_again)
    assert not np.array_equal(x, x_test)


def test_synthetic(data_config):
    data_config.source = "synthetic"
    data_config.input_shape = (5, 5, 3)
    data_config.num_classes = 4
    data_config.num_examples = 100
    dataset, spec = data.load_split(data_config, "test", batch_size=32)
    x, y = examples(dataset)
    assert x.shape == (100, 5, 5, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == np.int32 and 0 <= y.min() and y.max() < 4
    assert spec.num_classes == 4 and spec.train_examples == 100


# --- splits ------------------------------------------------------------------------------------------------

@pytest.mark.fast
def test_split_ranges_percent_and_plus():
    sizes = {"train": 100, "test": 20}
    assert splits.ranges("train", sizes, "s") == [("train", 0, 100)]
    assert splits.ranges("train[:90%]", sizes, "s") == [("train", 0, 90)]
    assert splits.ranges("train[10%:]+test[:5]", sizes, "s") == [("train", 10, 100), ("test", 0, 5)]
    assert splits.ranges("test[-5:]", sizes, "s") == [("test", 15, 20)]


def test_split_slices_select_examples(data_config):
    data_config.source = "generated:quadratic"
    data_config.num_examples = 100
    data_config.train_split = "train[:90%]"
    data_config.eval_split = "train[90%:]+test[:5]"
    datasets = data.build(data_config, 10, tf.distribute.get_strategy())
    assert (datasets.spec.train_examples, datasets.spec.eval_examples) == (90, 15)
    assert (datasets.steps_per_epoch, datasets.eval_steps) == (9, 2)


@pytest.mark.parametrize("split, message", [
    ("validation", "Unknown split 'validation'"),
    ("train[:abc]", "bad split 'train\\[:abc\\]'"),
    ("train[:200%]", "percent slice"),
    ("train[:5000]", "incompatible with 4 examples"),
    ("train[3:1]", "selects no examples"),
    ("", "bad split ''"),
])
@pytest.mark.fast
def test_bad_splits(data_config, split, message):
    data_config.source = "generated:xor"
    with pytest.raises(NntrainError, match=message):
        data.load_split(data_config, split, batch_size=2)


# --- tfds --------------------------------------------------------------------------------------------------

def test_tfds_mnist_mock(data_config):
    data_config.source = "tfds:mnist"
    with tfds.testing.mock_data(num_examples=6):
        dataset, spec = data.load_split(data_config, "test[:50%]", batch_size=4)
        x, y = examples(dataset)
    assert x.dtype == np.float32 and x.shape[1:] == (28, 28, 1) and 0.0 <= x.min() and x.max() <= 1.0
    assert y.dtype == np.int32 and y.shape == (len(x),) and 0 <= y.min() and y.max() < 10
    assert spec.num_classes == 10 and spec.input_shape == (28, 28, 1)


def test_tfds_text_tokens_are_reproducible(data_config):
    data_config.source = "tfds:imdb_reviews"
    data_config.sequence_length = 12
    data_config.vocab_size = 30
    with tfds.testing.mock_data(num_examples=8):
        first, spec = data.load_split(data_config, "test", batch_size=8)
        again, _ = data.load_split(data_config, "test", batch_size=8)
        x, y = examples(first)
        x_again, _ = examples(again)
    assert x.dtype == np.int32 and x.shape == (8, 12) and y.dtype == np.int32
    assert spec.input_shape == (12,) and spec.input_dtype == "int32" and spec.num_classes == 2
    assert 2 < spec.vocab_size <= 30 and x.max() < spec.vocab_size
    np.testing.assert_array_equal(x, x_again)


def test_tfds_text_under_mirrored_strategy(strategy, data_config):
    data_config.source = "tfds:imdb_reviews"
    data_config.sequence_length = 10
    with tfds.testing.mock_data(num_examples=8):
        datasets = data.build(data_config, 4, strategy)
        for x, y in replica_batches(strategy, next(iter(datasets.train))):
            assert x.shape == (2, 10) and x.dtype == tf.int32 and y.dtype == tf.int32
    assert datasets.spec.input_shape == (10,) and datasets.steps_per_epoch == 2


def test_tfds_not_prepared_without_download(tmp_path, data_config):
    data_config.source = "tfds:mnist"
    data_config.data_dir = str(tmp_path)
    with pytest.raises(NntrainError, match="not prepared.*download is false.*download_and_prepare.*idx:DIR"):
        data.load_split(data_config, "test", batch_size=2)


def test_tfds_not_prepared_download_host_unreachable_fails_fast(tmp_path, data_config):
    data_config.source = "tfds:mnist"
    data_config.data_dir = str(tmp_path)
    data_config.download = True
    start = time.monotonic()
    with pytest.raises(NntrainError, match="127.0.0.1.*unreachable.*download_and_prepare"):
        data.load_split(data_config, "test", batch_size=2)
    assert time.monotonic() - start < 30


def test_tfds_unknown_dataset(data_config):
    data_config.source = "tfds:mnistt"
    with pytest.raises(NntrainError, match="unknown TFDS dataset 'mnistt'.*tfds:mnist"):
        data.load_split(data_config, "test", batch_size=2)


# --- sources and pipelines ---------------------------------------------------------------------------------

@pytest.mark.fast
def test_unknown_source(data_config):
    data_config.source = "parquet:/tmp/x.parquet"
    with pytest.raises(NntrainError, match="unknown data.source 'parquet:/tmp/x.parquet'"):
        data.load_split(data_config, "test", batch_size=2)


@pytest.mark.fast
def test_per_replica_batches(strategy, data_config):
    data_config.source = "synthetic"
    data_config.input_shape = (4, 4, 1)
    data_config.num_examples = 20
    datasets = data.build(data_config, 8, strategy, seed=1)
    assert (datasets.num_replicas, datasets.per_replica_batch_size, datasets.global_batch_size) == (2, 4, 8)
    assert (datasets.steps_per_epoch, datasets.eval_steps) == (3, 3)
    train = iter(datasets.train)
    for _ in range(4):  # past one epoch: the train set repeats, every batch full
        for x, y in replica_batches(strategy, next(train)):
            assert x.shape == (4, 4, 4, 1) and y.shape == (4,)
    eval_batches = [replica_batches(strategy, batch) for batch in datasets.eval]
    assert len(eval_batches) == datasets.eval_steps
    assert sum(len(y) for batch in eval_batches for _, y in batch) == 20  # the last batch is partial


def test_input_pipelines_read_disjoint_shards(data_config):
    data_config.source = "generated:quadratic"
    data_config.num_examples = 10
    split = sources.open_source(data_config).select("train")
    shards = [pipeline._input(split, tf.distribute.InputContext(2, pipeline_id, 2), "train", False, None)
              for pipeline_id in range(2)]
    first, second = ([x[0] for x, _ in shard.as_numpy_iterator()] for shard in shards)
    assert len(first) == len(second) == 5 and not set(first) & set(second)


def test_batch_not_divisible_by_replicas(strategy, data_config):
    data_config.source = "generated:xor"
    with pytest.raises(NntrainError, match="batch_size=5 .* 2 replicas"):
        data.build(data_config, 5, strategy)


def test_no_eval_split(data_config):
    data_config.source = "generated:xor"
    data_config.eval_split = ""
    datasets = data.build(data_config, 2, tf.distribute.get_strategy())
    assert datasets.eval is None and datasets.eval_steps is None and datasets.steps_per_epoch == 2


def test_flip_crop_keeps_shape(strategy, data_config):
    data_config.source = "synthetic"
    data_config.input_shape = (6, 5, 3)
    data_config.num_examples = 16
    data_config.augment = "flip_crop"
    data_config.crop_padding = 2
    datasets = data.build(data_config, 8, strategy)
    for x, _ in replica_batches(strategy, next(iter(datasets.train))):
        assert x.shape == (4, 6, 5, 3) and x.dtype == tf.float32


def test_random_resized_crop_trains_on_crops_and_evaluates_the_center(data_config):
    image = np.arange(16 * 16, dtype=np.uint8).reshape(16, 16, 1)  # every pixel different
    data_config.augment = "random_resized_crop"
    examples = tf.data.Dataset.from_tensors((image, 0)).repeat(8)
    train = preprocess.augment(examples.batch(4, drop_remainder=True), data_config, seed=1)
    crops = [x for xs, _ in train.as_numpy_iterator() for x in xs]
    assert train.element_spec[0].shape == (4, 16, 16, 1) and all(c.dtype == np.uint8 for c in crops)  # static
    whole = {image.tobytes(), image[:, ::-1].tobytes()}  # the uncropped image, flipped or not
    assert len({c.tobytes() for c in crops} - whole) >= 6  # crops, different ones
    in_pairs = preprocess.augment(examples.batch(2, drop_remainder=True), data_config, seed=1)
    assert [x.tobytes() for xs, _ in in_pairs.as_numpy_iterator() for x in xs] == [c.tobytes() for c in crops]
    (centers, _), = preprocess.eval_crop(examples.batch(3), data_config).take(1).as_numpy_iterator()
    expected = tf.image.resize(image[1:15, 1:15], (16, 16)).numpy()  # the central 14 of 16 pixels, scaled back
    assert centers.shape == (3, 16, 16, 1)
    np.testing.assert_array_equal(centers[2], np.round(expected).astype(np.uint8))
    data_config.augment = "flip_crop"  # other augmentations leave evaluation alone
    assert preprocess.eval_crop(train, data_config) is train


def test_cache_auto_within_budget_and_never_streams(data_config, monkeypatch):
    lines = []
    monkeypatch.setattr(cache, "log", lines.append)
    images = tf.data.Dataset.from_tensors((np.zeros((32, 32, 3), np.uint8), np.int64(0))).repeat(1000)
    small = splits.Split(images, 1000)  # 3,080,000 bytes decoded
    data_config.cache_budget_mb = 5
    assert cache.plan(data_config, {"train": small, "eval": small}) == {"train": True, "eval": False}
    assert lines == ["train split cached in memory after its first pass (2.9 MB decoded, within "
                     "data.cache_budget_mb=5; data.cache=auto)",
                     "eval split not cached (2.9 MB decoded, over data.cache_budget_mb=5; data.cache=auto)"]
    uncounted = splits.Split(images, None, count=lambda: 1000)
    synthetic = splits.Split(images, 1000, cacheable=False)
    assert cache.plan(data_config, {"train": uncounted, "eval": synthetic}) == {"train": False, "eval": False}
    assert "streamed from its files" in lines[2] and "generated on the fly" in lines[3]
    data_config.cache = "true"
    assert cache.plan(data_config, {"train": uncounted, "eval": synthetic}) == {"train": True, "eval": False}
    data_config.cache = "false"
    assert cache.plan(data_config, {"train": small, "eval": None}) == {"train": False, "eval": False}


def test_flip_crop_needs_images(data_config):
    data_config.source = "generated:xor"
    data_config.augment = "flip_crop"
    with pytest.raises(NntrainError, match="flip_crop needs images"):
        data.build(data_config, 2, tf.distribute.get_strategy())


@pytest.mark.fast
def test_train_passes_are_seeded_per_pass_under_a_global_seed_of_zero():
    """train.seed=0 sets TensorFlow's global seed to 0: each pass is still read and shuffled with its own seed
    (different orders, the same from every iterator), and the process's global seed is left as it was."""
    tf.random.set_seed(0)
    try:
        passes = stream.shuffled_passes(lambda _: tf.data.Dataset.range(50), 50, 50, 0, 150)
        first, again = ([p.tolist() for p in passes.batch(50).take(3).as_numpy_iterator()] for _ in range(2))
        assert first == again and all(sorted(p) == list(range(50)) for p in first) and first[0] != first[1]
        assert tf.compat.v1.get_seed(None)[0] == 0
    finally:
        tf.random.set_seed(None)
