"""TFLite exports of the serving SavedModel: same raw inputs and answers, optionally quantized.

  none     float32 weights and activations
  dynamic  int8 weights, float activations (dynamic-range quantization)
  float16  float16 weights
  int8     int8 weights and activations, calibrated on CALIBRATION_EXAMPLES raw training examples

A byte-level language model's TFLite file is its `serve_tokens` signature (token ids in): tokenizing raw text
needs string ops. Text models on raw strings are refused: their string ops need TFLite's Flex delegate, which
TensorFlow's interpreter lacks.
Checked with TensorFlow 2.21 on Linux: converting TextVectorization with SELECT_TF_OPS works (Flex ops
RaggedTensorToTensor, StaticRegexReplace, StringLower, StringSplitV2), but tf.lite.Interpreter then fails with
"RuntimeError: Select TensorFlow op(s), included in the given model, is(are) not supported by this interpreter.
Make sure you apply/link the Flex delegate before inference. ... Node number 4 (FlexStringLower) failed to
prepare." The pip package stopped linking the Flex delegate in 2.20 (google-ai-edge/LiteRT#6458), so nothing
here could measure such a file's accuracy.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator

import numpy as np
import tensorflow as tf

from nntrain.data.raw import RawData
from nntrain.errors import NntrainError
from nntrain.exports.serving import Predictor, stored_signature

QUANTIZATIONS = ("none", "dynamic", "float16", "int8")
CALIBRATION_EXAMPLES = 300


def check_inputs(raw: RawData) -> None:
    """NntrainError unless the model reads numeric inputs (before an export writes anything)."""
    if raw.train.element_spec[0].dtype == tf.string:
        raise NntrainError("--format=tflite needs a model on numeric inputs, but this one reads raw text: TFLite "
                           "splits strings and looks up a vocabulary only with its Flex delegate (which TensorFlow's "
                           "TFLite interpreter lacks, and int8 cannot quantize); serve saved_model/ instead")


def convert(saved_model_dir: str, quantize: str, raw: RawData) -> bytes:
    """The TFLite flatbuffer of a serving SavedModel; NntrainError when TFLite cannot convert or quantize it."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[stored_signature(raw)[0]])
    if quantize != "none":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    if quantize == "int8":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: _calibration(raw)
    try:
        return converter.convert()
    except Exception as e:  # the converter raises ConverterError and others; its first line names the op
        first = next((line.strip() for line in str(e).splitlines() if "error" in line.lower()), str(e).strip())
        raise NntrainError(f"TFLite could not convert the model with --quantize={quantize}: {first[:300]}; "
                           "try another --quantize, or serve saved_model/") from e


def predictor(model: bytes, raw: RawData) -> Predictor:
    """Runs a TFLite model's signature with TFLite's interpreter on a batch of features as `raw` stores them."""
    with warnings.catch_warnings():  # tf.lite.Interpreter warns that it moves to LiteRT; it still works in TF 2.21
        warnings.simplefilter("ignore")
        interpreter = tf.lite.Interpreter(model_content=model)
    signature, name = stored_signature(raw)
    runner = interpreter.get_signature_runner(signature)

    def predict(features: np.ndarray) -> dict[str, np.ndarray]:
        try:
            return runner(**{name: features})
        except (RuntimeError, ValueError) as e:  # an op TFLite converted but cannot run
            raise NntrainError(f"the TFLite model does not run in TFLite's interpreter ({str(e).strip()[:300]}); "
                               "try another --quantize") from e

    return predict


def _calibration(raw: RawData) -> Iterator[dict[str, np.ndarray]]:
    name = stored_signature(raw)[1]
    for features, _ in raw.train.take(CALIBRATION_EXAMPLES).batch(1).as_numpy_iterator():
        yield {name: features}
