"""`text:GLOB`: the user's own text files as packed byte-level token sequences for a language model.

Files: every file the glob matches (local or gs://), in a fixed pseudo-random order (shuffled once with a fixed
seed, so `train[:90%]` / `train[90%:]` slice random files, not the alphabetically first ones); the source has
one split, `train`, and split specs slice it by file. A file with a NUL byte in its first 8,000 bytes is refused
as binary (git's rule); any other bytes are accepted, whatever their encoding.

Tokens: the file's bytes (0-255), then END_OF_FILE (256) between files: nothing to train, VOCAB_SIZE ids.
Packing: the files' tokens form one stream, read file by file (nothing is cached), cut into sequences of
`data.sequence_length` tokens; a sequence's targets are its tokens shifted by one, the last one being the next
sequence's first token. So every token of the stream is an input exactly once and a target exactly once (but the
very first and last), across sequence and file boundaries; the stream's tail that fills no sequence is dropped.
All shapes are static (TPU). With several input pipelines each reads its own files (sharding by file).
"""

from __future__ import annotations

import math
import random

import ml_collections
import numpy as np
import tensorflow as tf

from nntrain.data import splits
from nntrain.errors import NntrainError, op_message

END_OF_FILE = 256
VOCAB_SIZE = 257  # 256 byte values + END_OF_FILE
BINARY_PROBE_BYTES = 8000  # git's rule: a NUL byte among the first 8,000 makes a file binary
FILE_ORDER_SEED = 0  # the fixed shuffle of the matched files, before any split is sliced


class TextSource:
    """The files of a glob, one split `train` of len(files) files, sliced by file."""

    num_classes = VOCAB_SIZE
    class_names = None

    def __init__(self, pattern: str, data_config: ml_collections.ConfigDict):
        self.name = f"text:{pattern}"
        self._sequence_length = data_config.sequence_length
        files = sorted(path for path in tf.io.gfile.glob(pattern) if not tf.io.gfile.isdir(path))
        if not files:
            raise NntrainError(f"data.source={self.name} matches no files: check the pattern "
                               "(quote it, e.g. --config.data.source='text:corpus/*.txt')")
        random.Random(FILE_ORDER_SEED).shuffle(files)
        self._files = files

    def files(self, spec: str) -> list[str]:
        """The files a split spec selects, in stream order; NntrainError naming the first binary one."""
        selected = [path for _, start, stop in splits.ranges(spec, {"train": len(self._files)}, self.name)
                    for path in self._files[start:stop]]
        for path in selected:
            try:
                with tf.io.gfile.GFile(path, "rb") as f:
                    probe = f.read(BINARY_PROBE_BYTES)
            except tf.errors.OpError as e:  # e.g. a broken symbolic link the glob matched
                raise NntrainError(f"{path} cannot be read ({op_message(e)}; a broken link?): fix or remove it, or "
                                   f"narrow data.source={self.name}") from e
            if b"\0" in probe:
                raise NntrainError(f"{path} is a binary file (a NUL byte in its first {BINARY_PROBE_BYTES} "
                                   f"bytes), not text: narrow data.source={self.name} to text files")
        return selected

    def select(self, spec: str) -> splits.Split:
        files = self.files(spec)
        num_tokens = sum(tf.io.gfile.stat(path).length + 1 for path in files)
        length = self._sequence_length
        num_sequences = max(num_tokens - 1, 0) // length
        if not num_sequences:
            raise NntrainError(f"split '{spec}' of data.source={self.name} holds {num_tokens} tokens (its bytes and "
                               f"one end-of-file token per file), fewer than one sequence needs "
                               f"(data.sequence_length={length}, plus 1 for its last target): add text, or lower "
                               "--config.data.sequence_length")
        dataset = pack(files, length).apply(tf.data.experimental.assert_cardinality(num_sequences))
        # The pipeline shards by file (every n-th file to pipeline i) when there are enough files, else it keeps
        # every n-th sequence of the whole stream (data/pipeline.py). Packing keeps its file order: no reshuffle.
        return splits.Split(dataset, num_sequences, files=tuple(files),
                            shard=lambda count, index, seed: pack(files[index::count], length))


def pack(files: list[str], sequence_length: int) -> tf.data.Dataset:
    """`(inputs, targets)` int32 sequences of static shape (sequence_length,) from the files' token stream."""
    length = sequence_length

    def tokens(path: tf.Tensor) -> tf.Tensor:
        data = tf.cast(tf.io.decode_raw(tf.io.read_file(path), tf.uint8), tf.int32)
        return tf.concat([data, [END_OF_FILE]], axis=0)

    def pair(previous: tf.Tensor, chunk: tf.Tensor) -> tuple[tf.Tensor, tuple[tf.Tensor, tf.Tensor]]:
        targets = tf.concat([previous[1:], chunk[:1]], axis=0)
        targets.set_shape([length])
        state = tf.pad(chunk, [[0, length - tf.shape(chunk)[0]]])  # only the stream's last chunk is short
        state.set_shape([length])
        return state, (previous, targets)

    chunks = (tf.data.Dataset.from_tensor_slices(tf.constant(files, tf.string))
              .map(tokens, num_parallel_calls=tf.data.AUTOTUNE)
              .rebatch(length, drop_remainder=False))
    # Each chunk gets its targets once the next chunk is there; the first output pairs the zero initial state.
    return chunks.scan(tf.zeros([length], tf.int32), pair).skip(1)


def prompt_window(texts: tf.Tensor, context: int) -> tuple[tf.Tensor, tf.Tensor]:
    """Model inputs for a batch of texts (tf.string, any bytes), tokenized as `pack` tokenizes a file's start.

    END_OF_FILE (what precedes a file in the stream), then the text's bytes (0-255); its last `context` tokens,
    zero-padded on the right to (batch, context) int32 (a causal model's outputs before the padding ignore it);
    and the number of real tokens of each row, so the next token's probabilities are at `lengths - 1`.
    """
    chars = tf.strings.bytes_split(texts)
    ids = tf.reshape(tf.cast(tf.io.decode_raw(chars.flat_values, tf.uint8), tf.int32), [-1])
    starts = tf.RaggedTensor.from_tensor(tf.fill([tf.shape(texts)[0], 1], END_OF_FILE))
    tokens = tf.concat([starts, chars.with_flat_values(ids)], axis=1)[:, -context:]
    return tokens.to_tensor(0, shape=[None, context]), tf.cast(tokens.row_lengths(), tf.int32)


def unigram_entropy(files: list[str]) -> float:
    """Entropy in bits per byte of the files' byte frequencies (the bits/byte a model of single bytes reaches)."""
    counts = np.zeros(256, np.int64)
    for path in files:
        with tf.io.gfile.GFile(path, "rb") as f:
            counts += np.bincount(np.frombuffer(f.read(), np.uint8), minlength=256)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log2(p)).sum()) if p.size else math.nan
