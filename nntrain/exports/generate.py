"""`generate`: sample text from a trained byte-level language model (a text_gpt run, or its exported SavedModel).

The text is sampled in the graph by `sampling.sampler` (a key/value cache, the per-token loop compiled by XLA),
from a run's model or through its export's `generate` signature, which is that same function saved: the same
seed gives the same text from both. The prompt is tokenized as training tokenizes a file's start (END_OF_FILE,
then its UTF-8 bytes); a prompt plus its continuation may outgrow the context (the window slides). Generation
stops after `max_new_tokens` or at END_OF_FILE.

The sampling function of the last few directories stays loaded and compiled: the next call on an unchanged run or
export (a notebook sampling again with other settings) starts at once.
"""

from __future__ import annotations

import functools
import math
import os

import tensorflow as tf

from nntrain import config as nn_config
from nntrain import rundir
from nntrain.data.text import VOCAB_SIZE
from nntrain.errors import NntrainError
from nntrain.exports import artifacts, serving

MAX_SEED = 2**31 - 1  # the signature's seed is an int32
_GRAPH = "saved_model.pb"  # a SavedModel's graph, in an export's saved_model/ or in the folder given
# The files whose change means another model: the final model, a run's checkpoints, an export's graph.
_MODEL_FILES = (rundir.FINAL_MODEL, f"{rundir.CHECKPOINTS}/{rundir.STATE}", f"{rundir.CHECKPOINTS}/{rundir.BEST}",
                f"{artifacts.SAVED_MODEL}/{_GRAPH}", _GRAPH)


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, checkpoint: str = "final", top_p: float = 1.0) -> dict:
    """{prompt, completion, new_tokens}: `max_new_tokens` bytes at most sampled after `prompt`."""
    if max_new_tokens < 1:
        raise NntrainError(f"--max_new_tokens={max_new_tokens}: generate at least 1 token, e.g. --max_new_tokens=200")
    if not 0 <= seed <= MAX_SEED:
        raise NntrainError(f"--seed={seed}: it must be in [0, {MAX_SEED}]")
    if not 0 < temperature < math.inf:  # inf would sample every token alike, whatever the model says
        raise NntrainError(f"--temperature={temperature}: it must be a finite number > 0 (1.0 samples the model's own "
                           "distribution, lower values are greedier; --top_k=1 is greedy)")
    if top_k < 0:
        raise NntrainError(f"--top_k={top_k}: it must be >= 0 (0 samples from every token, 1 is greedy)")
    if not 0 < top_p <= 1:
        raise NntrainError(f"--top_p={top_p}: it must be in (0, 1] (1 samples from every token)")
    try:
        prompt_bytes = prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # a command line's bytes that are not UTF-8 arrive as surrogates (PEP 383)
        code = ord(prompt[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise NntrainError(f"--prompt is not UTF-8 text ({what} at position {e.start}): give UTF-8 text (a terminal "
                           "or locale set to UTF-8)") from None
    stamp = _stamp(model_dir)
    sample = _loaded(model_dir, checkpoint, stamp) if stamp else _load(model_dir, checkpoint)
    text = sample(prompts=tf.constant([prompt_bytes]), max_new_tokens=tf.constant(max_new_tokens),
                  temperature=tf.constant(temperature, tf.float32), top_k=tf.constant(top_k),
                  top_p=tf.constant(top_p, tf.float32), seed=tf.constant(seed))[serving.TEXT].numpy()[0]
    return {"prompt": prompt, "completion": text.decode("utf-8", errors="replace"), "new_tokens": len(text)}


def _stamp(model_dir: str) -> tuple | None:
    """(name, size, modification time) of each model file in `model_dir`; None without a time to trust (ram://)."""
    stamp = []
    for name in _MODEL_FILES:
        path = rundir.join(model_dir, name)
        if rundir.is_local(path):  # nanoseconds (TensorFlow's stat of a local file has whole seconds)
            if os.path.exists(path):
                stat = os.stat(path)
                stamp.append((name, stat.st_size, stat.st_mtime_ns))
        elif rundir.exists(path):
            stat = tf.io.gfile.stat(path)
            if not stat.mtime_nsec:
                return None
            stamp.append((name, stat.length, stat.mtime_nsec))
    return tuple(stamp)


@functools.lru_cache(maxsize=2)
def _loaded(model_dir: str, checkpoint: str, stamp: tuple) -> serving.Generator:
    """`_load`, kept while the files of `stamp` are unchanged."""
    return _load(model_dir, checkpoint)


def _load(model_dir: str, checkpoint: str) -> serving.Generator:
    """The `generate` signature of an export, or the same function for a run's model."""
    if tf.io.gfile.exists(os.path.join(model_dir, rundir.CONFIG)):
        model = artifacts.load_model(model_dir, checkpoint)
        if model.output_shape[-1] != VOCAB_SIZE:
            raise _not_bytes(model_dir, f"it predicts {model.output_shape[-1]} classes, not bytes")
        if (name := nn_config.load_saved(model_dir).model.name) != "gpt":
            raise NntrainError(f"'{model_dir}' holds a '{name}' model: generate samples from gpt models "
                               "(--experiment=text_gpt)")
        return tf.function(serving.generation(model), input_signature=serving.GENERATE_INPUTS, autograph=False)
    exported = [path for path in (os.path.join(model_dir, artifacts.SAVED_MODEL), model_dir)
                if tf.io.gfile.exists(os.path.join(path, _GRAPH))]
    if not exported:
        raise NntrainError(f"'{model_dir}' holds neither an nntrain run (config.json) nor an exported SavedModel "
                           "(saved_model.pb): pass a --model_dir that `nntrain train` or `nntrain export` wrote")
    signatures = tf.saved_model.load(exported[0]).signatures
    if serving.TOKENS_SIGNATURE not in signatures:
        raise _not_bytes(model_dir, f"its SavedModel has no {serving.TOKENS_SIGNATURE} signature")
    if serving.GENERATE_SIGNATURE not in signatures:
        raise NntrainError(f"'{model_dir}' was exported before SavedModels had a {serving.GENERATE_SIGNATURE} "
                           "signature: export its run again with `nntrain export`")
    return signatures[serving.GENERATE_SIGNATURE]


def _not_bytes(model_dir: str, why: str) -> NntrainError:
    return NntrainError(f"'{model_dir}' is not a byte-level language model ({why}): train one with "
                        "--experiment=text_gpt and export it with `nntrain export`")
