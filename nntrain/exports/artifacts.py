"""What a finished run is used for: evaluate it, export it, load it back."""

from __future__ import annotations

import math

import keras
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import rundir
from nntrain.data import raw as raw_data
from nntrain.errors import NntrainError
from nntrain.exports import serving
from nntrain.exports import tflite as tflite_export
from nntrain.logs import log
from nntrain.run import bundles, trainer
from nntrain.run.bits_per_byte import add as add_bits_per_byte
from nntrain.run.checkpoints import checkpoint_problem, latest_checkpoint
from nntrain.run.guards import check_export_dir

CHECKPOINTS = ("final", "best", "latest")
FORMATS = ("saved_model", "tflite")
KERAS_FILE, SAVED_MODEL, TFLITE_FILE = "model.keras", "saved_model", "model.tflite"


def load_model(model_dir: str, checkpoint: str = "final", unfinished: bool = True) -> keras.Model:
    """Loads a trained model from model_dir: `final`, `best` or `latest` (final falls back to latest).

    The latest checkpoint of a run that has not finished is named in one logged line (step N of M); with
    `unfinished` False (an export, a deliverable) it is refused unless asked for as `latest`. A damaged file is
    one line naming it and the other checkpoints that are readable.
    """
    if checkpoint not in CHECKPOINTS:
        raise NntrainError(f"unknown checkpoint '{checkpoint}': use one of {', '.join(CHECKPOINTS)}")
    config = nn_config.load_saved(model_dir)  # a clear error when model_dir holds no run
    paths = _model_paths(model_dir)
    latest = latest_checkpoint(rundir.checkpoint_dir(model_dir))
    tried = ["final", "latest"] if checkpoint == "final" else [checkpoint]
    for name in tried:
        path = paths[name]
        if path is None or (name != "latest" and not rundir.exists(path)):
            continue
        problem = checkpoint_problem(path)
        if problem is None:
            if name == "latest" and not rundir.exists(paths["final"]):
                where = f"the latest checkpoint (step {latest[1]} of {_total_steps(model_dir, config)})"
                if not unfinished and checkpoint != "latest":
                    raise NntrainError(f"'{model_dir}' has not finished training, and an export is a deliverable: "
                                       f"resume it with `nntrain train`, or export {where} with "
                                       "--checkpoint=latest")
                log(f"'{model_dir}' has not finished training: using {where}")
            try:
                return keras.models.load_model(path) if path.endswith(".keras") else _bundle_model(model_dir, path)
            except (ValueError, OSError, KeyError, TypeError, NntrainError) as e:
                problem = f"cannot load it: {str(e).splitlines()[0][:200]}"
        readable = [f"--checkpoint={other}" for other, other_path in paths.items()
                    if other != checkpoint and other_path and checkpoint_problem(other_path) is None]
        raise rundir.damaged(path, f"missing, though {rundir.STATE} names it" if problem == "missing" else problem,
                             f"use {' or '.join(readable)}" if readable else rundir.MOVE_ASIDE)
    there = [name for name, path in paths.items() if path and rundir.exists(path)]
    if there:
        raise NntrainError(f"'{model_dir}' has no {checkpoint} model, only {' and '.join(there)}: use "
                           + " or ".join(f"--checkpoint={name}" for name in there))
    raise NntrainError(f"'{model_dir}' has no {checkpoint} model yet: train it first "
                       "(`nntrain train --model_dir=...` resumes an interrupted run)")


def _model_paths(model_dir: str) -> dict[str, str | None]:
    """Where a run keeps its final, best and latest model (None: no checkpoint committed yet)."""
    checkpoint_dir = rundir.checkpoint_dir(model_dir)
    latest = latest_checkpoint(checkpoint_dir)
    return {"final": rundir.join(model_dir, rundir.FINAL_MODEL), "best": rundir.join(checkpoint_dir, rundir.BEST),
            "latest": latest[0] if latest else None}


def _saved_spec(model_dir: str) -> nn_data.DatasetSpec:
    fields = rundir.read_json_object(rundir.join(model_dir, rundir.DATASET)) or {}
    return nn_data.DatasetSpec(**{key: tuple(value) if isinstance(value, list) else value
                                  for key, value in fields.items()})


def _total_steps(model_dir: str, config) -> int:
    """The steps of the whole run: epochs x steps per epoch (train.steps_per_epoch, or one pass of its split)."""
    per_epoch = config.train.steps_per_epoch or math.ceil(_saved_spec(model_dir).train_examples /
                                                          config.train.batch_size)
    return per_epoch * config.train.epochs


def _bundle_model(model_dir: str, path: str) -> keras.Model:
    """The run's model, built and compiled from its config and dataset.json, with a step checkpoint's weights."""
    config = nn_config.load_saved(model_dir)
    model, _ = trainer.build_model(config, _saved_spec(model_dir), max(1, _total_steps(model_dir, config)),
                                   tf.distribute.get_strategy())
    bundles.read(model, path, optimizer=False)
    return model


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
    sends them). On a local disk the export is built beside export_dir and renamed into place, so export_dir is
    either complete or absent; on object stores (no directory rename) it is written in place. A failed export
    removes what it wrote, and the directories it created.
    """
    if export_format not in FORMATS:
        raise NntrainError(f"unknown export format '{export_format}': use one of {', '.join(FORMATS)}")
    if quantize not in tflite_export.QUANTIZATIONS:
        raise NntrainError(f"unknown quantization '{quantize}': use one of {', '.join(tflite_export.QUANTIZATIONS)}")
    if quantize != "none" and export_format != "tflite":
        raise NntrainError(f"--quantize={quantize} applies to TFLite exports: add --format=tflite")
    check_export_dir(model_dir, export_dir)
    config = nn_config.load_saved(model_dir)
    model = load_model(model_dir, checkpoint, unfinished=False)
    head = config.model.head
    raw = raw_data.load(config.data)
    if export_format == "tflite":
        tflite_export.check_inputs(raw)
    staging = f"{export_dir.rstrip('/')}.partial" if rundir.is_local(export_dir) else export_dir
    created = _first_missing(staging)  # removed again if the export fails: a failed export changes nothing
    rundir.remove(staging)
    rundir.makedirs(staging)
    exported = False
    try:
        keras_path, saved_model_path = rundir.join(staging, KERAS_FILE), rundir.join(staging, SAVED_MODEL)
        # An inference model: the same layers without the optimizer state that the run's model.keras carries.
        rundir.save_model(keras.Model(model.inputs, model.outputs, name=model.name), keras_path)
        serving.write_saved_model(model, config, raw, saved_model_path)
        nn_data.copy_saved_spec(model_dir, staging)  # class names travel with the model
        rows = [_row(KERAS_FILE, keras_path, _keras_score(model, config)),
                _row(SAVED_MODEL, saved_model_path,
                     serving.score(serving.saved_model_predictor(saved_model_path, raw), raw, head))]
        if export_format == "tflite":
            tflite_path = rundir.join(staging, TFLITE_FILE)
            flatbuffer = tflite_export.convert(saved_model_path, quantize, raw)
            rundir.write_bytes(tflite_path, flatbuffer)
            tflite_score = serving.score(tflite_export.predictor(flatbuffer, raw), raw, head)
            rows.append(_row(TFLITE_FILE, tflite_path, tflite_score, quantize))
        if staging != export_dir:
            rundir.remove(export_dir)
            rundir.move(staging, export_dir)
        exported = True
    finally:
        if not exported:
            rundir.remove(created or staging)
    paths = {row["artifact"]: rundir.join(export_dir, row["artifact"]) for row in rows}
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
    while path and not rundir.exists(path):
        missing, path = path, path.rstrip("/").rpartition("/")[0]
    return missing


def _row(name: str, path: str, score: dict, quantize: str = "none") -> dict:
    return {"artifact": name, "quantize": quantize, "bytes": _size(path), **score}


def _size(path: str) -> int:
    """Bytes of a file, or of every file in a directory tree."""
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(rundir.join(root, name)).length for root, _, names in tf.io.gfile.walk(path)
               for name in names)


def _keras_score(model: keras.Model, config) -> dict:
    """The Keras model's accuracy (or mse) on the preprocessed eval split, as `evaluate` measures it."""
    results = _metrics(model, config)
    key = "mse" if config.model.head == "regression" else "accuracy"
    return {key: float(results.get(key, results["loss"]))}
