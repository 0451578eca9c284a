"""What a finished run is used for: evaluate it, export it, load it back."""

from __future__ import annotations

import os
import shutil
import tempfile

import keras

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import serving, tflite_export
from nntrain.bits_per_byte import add as add_bits_per_byte
from nntrain.callbacks import latest_checkpoint
from nntrain.data import raw as raw_data
from nntrain.errors import NntrainError
from nntrain.trainer import CHECKPOINTS as CHECKPOINTS_DIR
from nntrain.trainer import FINAL_MODEL

CHECKPOINTS = ("final", "best", "latest")
FORMATS = ("saved_model", "tflite")
KERAS_FILE, SAVED_MODEL, TFLITE_FILE = "model.keras", "saved_model", "model.tflite"


def load_model(model_dir: str, checkpoint: str = "final") -> keras.Model:
    """Loads a trained model from model_dir: `final`, `best` or `latest` (final falls back to latest)."""
    if checkpoint not in CHECKPOINTS:
        raise NntrainError(f"unknown checkpoint '{checkpoint}': use one of {', '.join(CHECKPOINTS)}")
    nn_config.load_saved(model_dir)  # a clear error when model_dir holds no run
    checkpoint_dir = os.path.join(model_dir, CHECKPOINTS_DIR)
    latest = latest_checkpoint(checkpoint_dir)
    candidates = {"final": [os.path.join(model_dir, FINAL_MODEL)], "best": [os.path.join(checkpoint_dir, "best.keras")],
                  "latest": []}[checkpoint]
    if checkpoint != "best" and latest:
        candidates.append(latest[0])
    for path in candidates:
        if os.path.isfile(path):
            return keras.models.load_model(path)
    raise NntrainError(f"'{model_dir}' has no {checkpoint} model yet: train it first "
                       "(`nntrain train --model_dir=...` resumes an interrupted run)")


def evaluate(model_dir: str, checkpoint: str = "final") -> dict:
    """Evaluates a trained model on its config's eval split; returns {metric: value}."""
    return _metrics(load_model(model_dir, checkpoint), nn_config.load_saved(model_dir))


def _metrics(model: keras.Model, config) -> dict:
    dataset, spec = nn_data.load_split(config.data, config.data.eval_split, config.train.batch_size)
    results = model.evaluate(dataset, return_dict=True, verbose=0)
    return add_bits_per_byte({"examples": spec.eval_examples, **{k: float(v) for k, v in results.items()}},
                             config.data)


def export(model_dir: str, export_dir: str, checkpoint: str = "final", export_format: str = "saved_model",
           quantize: str = "none") -> dict:
    """Writes `model.keras` (no optimizer state), the serving SavedModel (`saved_model/`) and, for `tflite`,
    `model.tflite`.

    Every artifact is scored on the eval split (the SavedModel and TFLite model on raw examples, as a client
    sends them). The export is built in a temporary directory beside export_dir and renamed into place, so
    export_dir is either complete or absent.
    """
    if export_format not in FORMATS:
        raise NntrainError(f"unknown export format '{export_format}': use one of {', '.join(FORMATS)}")
    if quantize not in tflite_export.QUANTIZATIONS:
        raise NntrainError(f"unknown quantization '{quantize}': use one of {', '.join(tflite_export.QUANTIZATIONS)}")
    if quantize != "none" and export_format != "tflite":
        raise NntrainError(f"--quantize={quantize} applies to TFLite exports: add --format=tflite")
    if os.path.exists(export_dir) and os.listdir(export_dir):
        raise NntrainError(f"export_dir '{export_dir}' exists and is not empty: choose a new directory")
    config = nn_config.load_saved(model_dir)
    model = load_model(model_dir, checkpoint)
    head = config.model.head
    raw = raw_data.load(config.data)
    if export_format == "tflite":
        tflite_export.check_inputs(raw)
    parent = os.path.dirname(os.path.abspath(export_dir))
    created = _first_missing(parent)  # removed again if the export fails: a failed export changes nothing
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=".export-", dir=parent)
    exported = False
    try:
        keras_path, saved_model_path = os.path.join(staging, KERAS_FILE), os.path.join(staging, SAVED_MODEL)
        # An inference model: the same layers without the optimizer state that the run's model.keras carries.
        keras.Model(model.inputs, model.outputs, name=model.name).save(keras_path)
        serving.write_saved_model(model, config, raw, saved_model_path)
        rows = [_row(KERAS_FILE, keras_path, _keras_score(model, config)),
                _row(SAVED_MODEL, saved_model_path,
                     serving.score(serving.saved_model_predictor(saved_model_path), raw, head))]
        if export_format == "tflite":
            tflite_path = os.path.join(staging, TFLITE_FILE)
            flatbuffer = tflite_export.convert(saved_model_path, quantize, raw)
            with open(tflite_path, "wb") as f:
                f.write(flatbuffer)
            rows.append(_row(TFLITE_FILE, tflite_path, serving.score(tflite_export.predictor(flatbuffer), raw, head),
                             quantize))
        if os.path.exists(export_dir):
            os.rmdir(export_dir)
        os.replace(staging, export_dir)
        exported = True
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not exported:
            shutil.rmtree(created, ignore_errors=True)
    paths = {row["artifact"]: os.path.join(export_dir, row["artifact"]) for row in rows}
    return {"export_dir": export_dir, "keras": paths[KERAS_FILE], "saved_model": paths[SAVED_MODEL],
            **({"tflite": paths[TFLITE_FILE]} if TFLITE_FILE in paths else {}), "eval_examples": raw.eval_examples,
            "artifacts": rows}


def format_table(result: dict) -> str:
    """The export's artifacts as a table: file, quantization, size and eval-split score."""
    metric = next(k for k in ("accuracy", "mse") if k in result["artifacts"][0])
    lines = [f"exported to {result['export_dir']}; {metric} on the {result['eval_examples']} eval examples",
             f"{'artifact':<16}{'quantize':<10}{'size':>12}{metric:>12}"]
    for row in result["artifacts"]:
        lines.append(f"{row['artifact']:<16}{row['quantize']:<10}{row['bytes'] / 1024:>9.1f} KB{row[metric]:>12.6g}")
    return "\n".join(lines)


def _first_missing(path: str) -> str | None:
    """The outermost directory of `path` that does not exist yet, or None."""
    missing = None
    while not os.path.exists(path):
        missing, path = path, os.path.dirname(path)
    return missing


def _row(name: str, path: str, score: dict, quantize: str = "none") -> dict:
    return {"artifact": name, "quantize": quantize, "bytes": _size(path), **score}


def _size(path: str) -> int:
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(root, name)) for root, _, names in os.walk(path) for name in names)


def _keras_score(model: keras.Model, config) -> dict:
    """The Keras model's accuracy (or mse) on the preprocessed eval split, as `evaluate` measures it."""
    results = _metrics(model, config)
    key = "mse" if config.model.head == "regression" else "accuracy"
    return {key: float(results.get(key, results["loss"]))}
