"""`generate`: sample text from a trained byte-level language model (a text_gpt run, or its exported SavedModel).

The model is asked as a client asks the export: the text so far (the prompt's UTF-8 bytes, then the bytes drawn)
goes to `serving.next_token_answers`, the export's `serving_default`, which tokenizes it in the graph as training
tokenizes a file's start (END_OF_FILE, then the bytes; once the text outgrows the context, its last `context`
tokens). Each new token is drawn from the model's next-token distribution at temperature T, from its K most
likely tokens (K=0: all), with a numpy generator seeded by `seed`: the same seed gives the same text, from a run
or from its export. Generation stops after `max_new_tokens` or at END_OF_FILE.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from nntrain import rundir
from nntrain.data.text import END_OF_FILE, VOCAB_SIZE
from nntrain.errors import NntrainError
from nntrain.exports import artifacts, serving


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, checkpoint: str = "final") -> dict:
    """{prompt, completion, new_tokens}: `max_new_tokens` bytes at most sampled after `prompt`."""
    if max_new_tokens < 1:
        raise NntrainError(f"--max_new_tokens={max_new_tokens}: generate at least 1 token, e.g. --max_new_tokens=200")
    if seed < 0:
        raise NntrainError(f"--seed={seed}: it must be >= 0 (NumPy's seeds are non-negative)")
    if not 0 < temperature < math.inf:  # inf would sample every token alike, whatever the model says
        raise NntrainError(f"--temperature={temperature}: it must be a finite number > 0 (1.0 samples the model's own "
                           "distribution, lower values are greedier)")
    if top_k < 0:
        raise NntrainError(f"--top_k={top_k}: it must be >= 0 (0 samples from every token)")
    try:
        text = prompt.encode("utf-8")
    except UnicodeEncodeError as e:  # a command line's bytes that are not UTF-8 arrive as surrogates (PEP 383)
        code = ord(prompt[e.start])
        what = f"byte 0x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else f"U+{code:04X}"
        raise NntrainError(f"--prompt is not UTF-8 text ({what} at position {e.start}): give UTF-8 text (a terminal "
                           "or locale set to UTF-8)") from None
    predict, context = _load(model_dir, checkpoint)
    if len(text) >= context:  # END_OF_FILE comes first
        raise NntrainError(f"--prompt is {len(text)} bytes, longer than the model's context of {context - 1} "
                           f"bytes: shorten it to its last {context - 1} bytes or fewer")
    rng = np.random.default_rng(seed)
    new = bytearray()
    for _ in range(max_new_tokens):
        token = _sample(predict(text + new), temperature, top_k, rng)
        if token == END_OF_FILE:
            break
        new.append(token)
    return {"prompt": prompt, "completion": new.decode("utf-8", errors="replace"), "new_tokens": len(new)}


def _sample(probabilities: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """One token id drawn from probabilities ** (1 / temperature), restricted to the top_k most likely."""
    logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-30)) / temperature
    if 0 < top_k < logits.size:
        logits[logits < np.sort(logits)[-top_k]] = -np.inf
    weights = np.exp(logits - logits.max())
    return int(rng.choice(logits.size, p=weights / weights.sum()))


def _load(model_dir: str, checkpoint: str) -> tuple[Callable[[bytes], np.ndarray], int]:
    """(text -> next-token probabilities, context length) of the byte-level language model of a run or an export."""
    if tf.io.gfile.exists(os.path.join(model_dir, rundir.CONFIG)):
        model = artifacts.load_model(model_dir, checkpoint)
        if model.output_shape[-1] != VOCAB_SIZE:
            raise _not_bytes(model_dir, f"it predicts {model.output_shape[-1]} classes, not bytes")
        serve = tf.function(serving.next_token_answers(model),
                            input_signature=[tf.TensorSpec((None,), tf.string, name=serving.PROMPTS)])
        context = model.input_shape[1]
    elif exported := [path for path in (os.path.join(model_dir, "saved_model"), model_dir)
                      if tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))]:
        signatures = tf.saved_model.load(exported[0]).signatures
        if serving.TOKENS_SIGNATURE not in signatures:
            raise _not_bytes(model_dir, f"its SavedModel has no {serving.TOKENS_SIGNATURE} signature")
        serve = signatures[serving.SIGNATURE]  # raw text in, tokenized in the graph
        (token_ids,) = signatures[serving.TOKENS_SIGNATURE].structured_input_signature[1].values()
        context = int(token_ids.shape[1])
    else:
        raise NntrainError(f"'{model_dir}' holds neither an nntrain run (config.json) nor an exported SavedModel "
                           "(saved_model.pb): pass a --model_dir that `nntrain train` or `nntrain export` wrote")
    return lambda text: serve(prompts=tf.constant([text]))["probabilities"].numpy()[0], context


def _not_bytes(model_dir: str, why: str) -> NntrainError:
    return NntrainError(f"'{model_dir}' is not a byte-level language model ({why}): train one with "
                        "--experiment=text_gpt and export it with `nntrain export`")
