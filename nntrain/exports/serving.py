"""The serving SavedModel: takes examples as a client has them and answers with probabilities and classes.

`serving_default` takes `features` as stored by the data source (uint8 images of the source's shape, raw
strings for text) and applies the training preprocessing inside the graph (scaling, the text vocabulary), so a
client needs neither nntrain nor its preprocessing. It returns `probabilities` and `class_index` (plus
`class_name` where the source names its classes) for classification and binary heads, `outputs` for regression.

Byte-level language models (`text:` sources) are served on raw text instead: `serving_default` takes `prompts`, a
batch of strings (UTF-8 or any bytes), tokenized in the graph as training tokenizes a file's start
(`text.prompt_window`), and returns the next token's `probabilities`, `next_token` and `next_byte`; their
`serve_tokens` takes `token_ids` (batch, context) and returns every position's `probabilities` and `class_index`.

Byte-level gpt models also get `generate`: `prompts` (batch,) strings, scalars `max_new_tokens` (int32),
`temperature` (float32), `top_k` (int32, 0: all), `top_p` (float32, 1: all) and `seed` (int32) in; `text`, each
prompt's sampled continuation (bytes), out: `sampling.sampler`, with a key/value cache and an XLA-compiled loop.

Image models also get `serve_encoded`, taking `image_bytes`: a batch of encoded image files (JPEG, PNG, BMP, GIF)
of any size, decoded and resized exactly as an `images:DIR` source does in tf.data, then answered as above.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
import ml_collections
import numpy as np
import tensorflow as tf

from nntrain.data import images, text
from nntrain.data.raw import RawData
from nntrain.exports import sampling

SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "serve_encoded"  # image models: encoded image files of any size
TOKENS_SIGNATURE = "serve_tokens"  # byte-level language models: token ids, every position's probabilities
FEATURES, PROMPTS, TOKEN_IDS = "features", "prompts", "token_ids"  # the signatures' input names
EVAL_BATCH = 256
GENERATE_SIGNATURE = "generate"  # byte-level gpt models: prompts and sampling settings in, text out
TEXT = "text"  # the generate signature's output
GENERATE_INPUTS = [tf.TensorSpec((None,), tf.string, name=PROMPTS), tf.TensorSpec((), tf.int32, name="max_new_tokens"),
                   tf.TensorSpec((), tf.float32, name="temperature"), tf.TensorSpec((), tf.int32, name="top_k"),
                   tf.TensorSpec((), tf.float32, name="top_p"), tf.TensorSpec((), tf.int32, name="seed")]

Answers = dict[str, tf.Tensor]
Predictor = Callable[[np.ndarray], dict[str, np.ndarray]]
Generator = Callable[..., Answers]


def write_saved_model(model: keras.Model, config: ml_collections.ConfigDict, raw: RawData, path: str) -> None:
    """Writes the serving SavedModel of `model` to `path`."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    stored = raw.train.element_spec[0]
    head, names = config.model.head, raw.class_names

    def serve(features: tf.Tensor) -> Answers:
        return answers(model(raw.preprocess.to_inputs(features), training=False), head, names)

    signature, name = stored_signature(raw)
    archive.add_endpoint(signature, serve, input_signature=[tf.TensorSpec((None, *stored.shape), stored.dtype,
                                                                           name=name)])
    if raw.byte_level:
        archive.add_endpoint(SIGNATURE, next_token_answers(model),
                             input_signature=[tf.TensorSpec((None,), tf.string, name=PROMPTS)])
        if config.model.name == "gpt":
            archive.add_endpoint(GENERATE_SIGNATURE, generation(model), input_signature=GENERATE_INPUTS)
    if _is_image(stored):
        decode = images.decoder(tuple(stored.shape))
        decoded_spec = tf.TensorSpec(stored.shape, stored.dtype)

        def serve_encoded(image_bytes: tf.Tensor) -> Answers:
            return serve(tf.map_fn(decode, image_bytes, fn_output_signature=decoded_spec))

        # `image_bytes`: TF Serving's REST API base64-decodes inputs named *_bytes ({"b64": ...}).
        archive.add_endpoint(ENCODED_SIGNATURE, serve_encoded,
                             input_signature=[tf.TensorSpec((None,), tf.string, name="image_bytes")])
    vectorizer = raw.preprocess.vectorizer
    if vectorizer is not None:  # its vocabulary table goes into the SavedModel
        vectorizer.build()  # it has no weights; adapt() leaves it unbuilt, which ExportArchive.track refuses
        archive.track(vectorizer)
    archive.write_out(path, verbose=False)


def stored_signature(raw: RawData) -> tuple[str, str]:
    """The signature, and its input's name, that take features as `raw` stores them (what `score` feeds)."""
    return (TOKENS_SIGNATURE, TOKEN_IDS) if raw.byte_level else (SIGNATURE, FEATURES)


def next_token_answers(model: keras.Model) -> Callable[[tf.Tensor], Answers]:
    """A byte-level language model's answers to a batch of raw texts (tf.string): the next token's
    `probabilities` (text.VOCAB_SIZE), the most likely `next_token` (text.END_OF_FILE: the text ends) and
    `next_byte`, that token as a one-byte string ("" for END_OF_FILE). Texts longer than the model's context
    are seen by their last tokens, as `nntrain generate` does."""
    context = model.input_shape[1]
    byte_strings = tf.constant([bytes([value]) for value in range(text.END_OF_FILE)] + [b""])

    def serve(prompts: tf.Tensor) -> Answers:
        window, lengths = text.prompt_window(prompts, context)
        probabilities = tf.gather(model(window, training=False), lengths - 1, batch_dims=1)
        token = tf.argmax(probabilities, axis=-1)
        return {"probabilities": probabilities, "next_token": token, "next_byte": tf.gather(byte_strings, token)}

    return serve


def generation(model: keras.Model) -> Generator:
    """The generate signature's function of a byte-level gpt model: {"text": continuations}."""
    sample = sampling.sampler(model)

    def generate(prompts: tf.Tensor, max_new_tokens: tf.Tensor, temperature: tf.Tensor, top_k: tf.Tensor,
                 top_p: tf.Tensor, seed: tf.Tensor) -> Answers:
        return {TEXT: sample(prompts, max_new_tokens, temperature, top_k, top_p, seed)}

    return generate


def _is_image(stored: tf.TensorSpec) -> bool:
    """Whether stored features are uint8 images (height, width, 1|3|4 channels), which files can encode."""
    shape = stored.shape
    return stored.dtype == tf.uint8 and shape.rank == 3 and shape.is_fully_defined() and shape[2] in (1, 3, 4)


def answers(outputs: tf.Tensor, head: str, class_names: tuple[str, ...] | None = None) -> Answers:
    """The model's outputs as a client wants them: probabilities and the class (index and name), or values."""
    if head == "regression":
        return {"outputs": outputs}
    if head == "binary":
        index = tf.cast(outputs[:, 0] > 0.5, tf.int64)
    else:
        index = tf.argmax(outputs, axis=-1)
    result = {"probabilities": outputs, "class_index": index}
    if class_names:
        result["class_name"] = tf.gather(tf.constant(class_names), index)
    return result


def saved_model_predictor(path: str, raw: RawData) -> Predictor:
    """Runs a serving SavedModel on a batch of features as `raw` stores them."""
    signature, name = stored_signature(raw)
    serve = tf.saved_model.load(path).signatures[signature]
    return lambda features: {k: v.numpy() for k, v in serve(**{name: tf.constant(features)}).items()}


def score(predict: Predictor, raw: RawData, head: str) -> dict[str, float]:
    """`accuracy` (classification, binary) or `mse` (regression) of a raw-input predictor on the eval split;
    and `bits_per_byte` for a byte-level language model (its mean -log2 probability of each next token)."""
    total, count, bits = 0.0, 0, 0.0
    for features, labels in raw.eval.batch(EVAL_BATCH).as_numpy_iterator():
        result = predict(features)
        if head == "regression":  # squared errors, averaged over every output of every example
            outputs = result["outputs"]
            total += float(np.sum((outputs - labels.reshape(outputs.shape)) ** 2))
            count += outputs.size
        else:
            index = result["class_index"]  # one class per example, or per token of a sequence
            targets = labels.reshape(index.shape).astype(np.int64)
            total += float(np.sum(index == targets))
            count += index.size
            if raw.byte_level:
                picked = np.take_along_axis(result["probabilities"], targets[..., None], axis=-1)
                bits -= float(np.sum(np.log2(np.maximum(picked, np.finfo(np.float32).tiny))))
    scores = {"mse" if head == "regression" else "accuracy": total / count}
    return {**scores, "bits_per_byte": bits / count} if raw.byte_level else scores

