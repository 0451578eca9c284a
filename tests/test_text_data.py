"""text:GLOB: byte tokens, packing across sequence and file boundaries, slicing by file, sharding, bad files."""

import numpy as np
import pytest
import tensorflow as tf

from nntrain import data
from nntrain.data import pipeline, text
from nntrain.errors import NntrainError

LENGTH = 8


@pytest.fixture
def corpus(tmp_path):
    """Five small files of different lengths (one not UTF-8: any bytes but NUL are text)."""
    contents = [b"hello world\n", b"abc", "caf\u00e9 \u2603\n".encode(), b"\xff\xfe latin-1 \xe9", b"x" * 21]
    for i, content in enumerate(contents):
        (tmp_path / f"f{i}.txt").write_bytes(content)
    return tmp_path


def text_config(data_config, pattern, length=LENGTH):
    data_config.source = f"text:{pattern}"
    data_config.train_split = "train"
    data_config.eval_split = ""
    data_config.sequence_length = length
    data_config.cache = "false"
    return data_config


def stream(source, spec):
    """The token stream packing must reproduce: each selected file's bytes, then END_OF_FILE."""
    tokens = []
    for path in source.files(spec):
        tokens += list(open(path, "rb").read()) + [text.END_OF_FILE]
    return np.array(tokens)


def test_packing_keeps_every_token_once_with_static_shapes(corpus, data_config):
    config = text_config(data_config, f"{corpus}/*.txt")
    source = text.TextSource(f"{corpus}/*.txt", config)
    split = source.select("train")
    assert split.dataset.element_spec == (tf.TensorSpec([LENGTH], tf.int32), tf.TensorSpec([LENGTH], tf.int32))
    pairs = list(split.dataset.as_numpy_iterator())
    tokens = stream(source, "train")
    assert len(pairs) == split.num_examples == (len(tokens) - 1) // LENGTH
    inputs = np.concatenate([x for x, _ in pairs])
    targets = np.concatenate([y for _, y in pairs])
    # Inputs are the stream in order, nothing lost or repeated at sequence or file boundaries; targets shift by one.
    np.testing.assert_array_equal(inputs, tokens[:len(inputs)])
    np.testing.assert_array_equal(targets, tokens[1:len(inputs) + 1])


def test_split_slices_by_file_and_pipeline_batches_statically(corpus, data_config):
    config = text_config(data_config, f"{corpus}/*.txt")
    source = text.TextSource(f"{corpus}/*.txt", config)
    head, tail = source.files("train[:60%]"), source.files("train[60%:]")
    assert len(head) == 3 and len(tail) == 2 and not set(head) & set(tail)
    assert sorted(head + tail) == sorted(str(p) for p in corpus.glob("*.txt"))
    config.train_split, config.eval_split = "train[:60%]", "train[60%:]"
    datasets = data.build(config, 2, tf.distribute.OneDeviceStrategy("/cpu:0"), seed=0)
    assert datasets.spec.input_shape == (LENGTH,) and datasets.spec.input_dtype == "int32"
    assert datasets.spec.vocab_size == datasets.spec.num_classes == text.VOCAB_SIZE
    x, y = next(iter(datasets.train))
    assert x.shape == y.shape == (2, LENGTH) and x.dtype == y.dtype == tf.int32


def test_input_pipelines_read_disjoint_files(corpus, data_config):
    config = text_config(data_config, f"{corpus}/*.txt", length=2)
    source = text.TextSource(f"{corpus}/*.txt", config)
    split = source.select("train")
    shards = [list(pipeline._input(split, tf.distribute.InputContext(2, i, 1), "train", False,
                                        seed=0).as_numpy_iterator())
              for i in range(2)]
    files = source.files("train")
    for index, shard in enumerate(shards):
        own = np.concatenate([list(open(path, "rb").read()) + [text.END_OF_FILE] for path in files[index::2]])
        np.testing.assert_array_equal(np.concatenate([x for x, _ in shard]), own[:2 * len(shard)])


def test_unigram_entropy_in_bits(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"abab")
    (tmp_path / "b.txt").write_bytes(b"cd")
    assert text.unigram_entropy([str(tmp_path / "a.txt"), str(tmp_path / "b.txt")]) == pytest.approx(
        -(2 * (1 / 3) * np.log2(1 / 3) + 2 * (1 / 6) * np.log2(1 / 6)))


def test_empty_glob_is_one_line(tmp_path, data_config):
    config = text_config(data_config, f"{tmp_path}/*.txt")
    with pytest.raises(NntrainError, match=r"matches no files") as error:
        data.build(config, 2, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert "\n" not in str(error.value)


def test_binary_file_is_refused_by_name(corpus, data_config):
    (corpus / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR")
    config = text_config(data_config, f"{corpus}/*.txt")
    with pytest.raises(NntrainError, match=r"image\.txt is a binary file") as error:
        data.build(config, 2, tf.distribute.OneDeviceStrategy("/cpu:0"))
    assert "\n" not in str(error.value)


def test_the_packed_stream_resumes_exactly_from_an_iterator_checkpoint(corpus, data_config, tmp_path):
    config = text_config(data_config, f"{corpus}/*.txt", length=4)
    stream = text.TextSource(f"{corpus}/*.txt", config).select("train").dataset
    dataset = stream.shuffle(8, seed=0).repeat().batch(2)
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    path = tf.train.Checkpoint(iterator=iterator).save(str(tmp_path / "ckpt" / "it"))
    expected = [next(iterator)[0].numpy() for _ in range(6)]
    restored = iter(dataset)
    tf.train.Checkpoint(iterator=restored).restore(path)
    np.testing.assert_array_equal([next(restored)[0].numpy() for _ in range(6)], expected)
