"""`generate`: sample text from a trained byte-level language model (a text_gpt run, or its exported SavedModel).

The prompt's UTF-8 bytes follow END_OF_FILE, as a file's first bytes do in training. Each new token is drawn
from the model's next-token distribution at temperature T, from its K most likely tokens (K=0: all), with a
numpy generator seeded by `seed`: the same seed gives the same text. Generation stops after `max_new_tokens`
or at END_OF_FILE; once the text outgrows the model's context, the model sees its last `context` tokens.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from nntrain import artifacts
from nntrain import config as nn_config
from nntrain.data.text import END_OF_FILE
from nntrain.errors import NntrainError


def generate(model_dir: str, prompt: str, max_new_tokens: int = 200, temperature: float = 1.0, top_k: int = 0,
             seed: int = 0, checkpoint: str = "final") -> dict:
    """{prompt, completion, new_tokens}: `max_new_tokens` bytes at most sampled after `prompt`."""
    if max_new_tokens < 1:
        raise NntrainError(f"--max_new_tokens={max_new_tokens}: generate at least 1 token, e.g. --max_new_tokens=200")
    if seed < 0:
        raise NntrainError(f"--seed={seed}: it must be >= 0 (NumPy's seeds are non-negative)")
    if not temperature > 0:
        raise NntrainError(f"--temperature={temperature}: it must be > 0 (1.0 samples the model's own distribution, "
                           "lower values are greedier)")
    if top_k < 0:
        raise NntrainError(f"--top_k={top_k}: it must be >= 0 (0 samples from every token)")
    predict, context, vocab_size = _load(model_dir, checkpoint)
    if vocab_size <= END_OF_FILE:
        raise NntrainError(f"'{model_dir}' is not a byte-level language model (it predicts {vocab_size} classes, "
                           "not bytes): train one with --experiment=text_gpt")
    tokens = [END_OF_FILE, *prompt.encode("utf-8")]
    if len(tokens) > context:
        raise NntrainError(f"--prompt is {len(tokens) - 1} bytes, longer than the model's context of {context - 1} "
                           f"bytes: shorten it to its last {context - 1} bytes or fewer")
    rng = np.random.default_rng(seed)
    new: list[int] = []
    for _ in range(max_new_tokens):
        window = tokens[-context:]
        batch = np.zeros((1, context), np.int32)  # the positions after the text do not affect it (causal)
        batch[0, :len(window)] = window
        token = _sample(predict(batch)[0, len(window) - 1], temperature, top_k, rng)
        if token == END_OF_FILE:
            break
        tokens.append(token)
        new.append(token)
    return {"prompt": prompt, "completion": bytes(new).decode("utf-8", errors="replace"), "new_tokens": len(new)}


def _sample(probabilities: np.ndarray, temperature: float, top_k: int, rng: np.random.Generator) -> int:
    """One token id drawn from probabilities ** (1 / temperature), restricted to the top_k most likely."""
    logits = np.log(np.maximum(probabilities.astype(np.float64), 1e-30)) / temperature
    if 0 < top_k < logits.size:
        logits[logits < np.sort(logits)[-top_k]] = -np.inf
    weights = np.exp(logits - logits.max())
    return int(rng.choice(logits.size, p=weights / weights.sum()))


def _load(model_dir: str, checkpoint: str) -> tuple[Callable[[np.ndarray], np.ndarray], int, int]:
    """(batch of token ids -> next-token probabilities, context length, vocabulary size) of a run or an export."""
    if tf.io.gfile.exists(os.path.join(model_dir, nn_config.RESOLVED_CONFIG_NAME)):
        model = artifacts.load_model(model_dir, checkpoint)
        forward = tf.function(lambda x: model(x, training=False))
        return lambda batch: forward(tf.constant(batch)).numpy(), model.input_shape[1], model.output_shape[-1]
    exported = [path for path in (os.path.join(model_dir, "saved_model"), model_dir)
                if tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))]
    if exported:
        serve = tf.saved_model.load(exported[0]).signatures["serving_default"]
        (name, spec), = serve.structured_input_signature[1].items()
        output = serve.structured_outputs["probabilities"]
        return (lambda batch: serve(**{name: tf.constant(batch)})["probabilities"].numpy(),
                int(spec.shape[1]), int(output.shape[-1]))
    raise NntrainError(f"'{model_dir}' holds neither an nntrain run (config.json) nor an exported SavedModel "
                       "(saved_model.pb): pass a --model_dir that `nntrain train` or `nntrain export` wrote")
