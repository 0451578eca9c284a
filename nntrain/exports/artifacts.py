"""What a finished run is used for: evaluate it, export it, load it back."""

from __future__ import annotations

import math
import os
import tempfile

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
PARTIAL = ".nntrain-partial-"  # in the name of the directory an export is built in


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


def _metrics(model: keras.Model, config, steps: int | None = None) -> dict:
    """The model's metrics on the eval split: its first `steps` batches, or all of it."""
    dataset, spec = nn_data.load_split(config.data, config.data.eval_split, config.train.batch_size)
    results = model.evaluate(dataset.take(steps) if steps else dataset, return_dict=True, verbose=0)
    examples = spec.eval_examples if not steps else min(steps * config.train.batch_size, spec.eval_examples or math.inf)
    return add_bits_per_byte({"examples": examples, **{k: float(v) for k, v in results.items()}}, config.data)


def export(model_dir: str, export_dir: str, checkpoint: str = "final", export_format: str = "saved_model",
           quantize: str = "none") -> dict:
    """Writes `model.keras` (no optimizer state), the serving SavedModel (`saved_model/`) and, for `tflite`,
    `model.tflite`.

    Every artifact is scored on the examples the run evaluates (its `train.eval_steps` batches of the eval split,
    or all of it; the SavedModel and TFLite model on raw examples, as a client sends them). On a local disk the
    export is built in a new directory of nntrain's (beside export_dir, or inside it when it is an empty directory
    already) and moved into place, so export_dir is either complete or as it was; on object stores (no directory
    rename) it is written in place. A failed export removes what it wrote and the directories it created, and
    nothing else: no directory of the user's is ever removed.
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
    if export_format == "tflite":  # TFLite's converter and quantizer take float32 ops, not a bf16 run's
        model = float32_copy(model)
    head = config.model.head
    steps = config.train.eval_steps
    raw = raw_data.load(config.data, steps * config.train.batch_size if steps else None)
    if export_format == "tflite":
        tflite_export.check_inputs(raw)
    staging, created = _staging(export_dir)
    exported = False
    try:
        keras_path, saved_model_path = rundir.join(staging, KERAS_FILE), rundir.join(staging, SAVED_MODEL)
        # An inference model: the same layers without the optimizer state that the run's model.keras carries.
        rundir.save_model(keras.Model(model.inputs, model.outputs, name=model.name), keras_path)
        serving.write_saved_model(model, config, raw, saved_model_path)
        nn_data.copy_saved_spec(model_dir, staging)  # class names travel with the model
        rows = [_row(KERAS_FILE, keras_path, _keras_score(model, config, steps)),
                _row(SAVED_MODEL, saved_model_path,
                     serving.score(serving.saved_model_predictor(saved_model_path, raw), raw, head))]
        if export_format == "tflite":
            tflite_path = rundir.join(staging, TFLITE_FILE)
            flatbuffer = tflite_export.convert(saved_model_path, quantize, raw)
            rundir.write_bytes(tflite_path, flatbuffer)
            tflite_score = serving.score(tflite_export.predictor(flatbuffer, raw), raw, head)
            rows.append(_row(TFLITE_FILE, tflite_path, tflite_score, quantize))
        _publish(staging, export_dir)
        exported = True
    finally:
        if not exported:
            _discard(staging, export_dir, created)
    paths = {row["artifact"]: rundir.join(export_dir, row["artifact"]) for row in rows}
    return {"export_dir": export_dir, "keras": paths[KERAS_FILE], "saved_model": paths[SAVED_MODEL],
            **({"tflite": paths[TFLITE_FILE]} if TFLITE_FILE in paths else {}), "eval_examples": raw.eval_examples,
            "artifacts": rows}


def float32_copy(model: keras.Model) -> keras.Model:
    """`model` computing in float32: the same layers and weights, every mixed dtype policy (a mixed_bfloat16 or
    mixed_float16 run's) replaced by float32. Mixed precision keeps its variables in float32, so no weight changes."""
    def float32(node):
        if isinstance(node, dict):
            if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
                return {**node, "config": {**node["config"], "name": "float32"}}
            return {key: float32(value) for key, value in node.items()}
        if isinstance(node, list):
            return [float32(value) for value in node]
        return node

    if all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers()):
        return model
    copy = keras.saving.deserialize_keras_object(float32(keras.saving.serialize_keras_object(model)))
    copy.set_weights(model.get_weights())
    return copy


def format_table(result: dict) -> str:
    """The export's artifacts as a table: file, quantization, size and eval-split scores (bits per byte too, for
    a byte-level language model)."""
    metrics = [k for k in ("accuracy", "mse", "bits_per_byte") if k in result["artifacts"][0]]
    lines = [f"exported to {result['export_dir']}; {' and '.join(metrics)} on the {result['eval_examples']} eval "
             "examples", f"{'artifact':<16}{'quantize':<10}{'size':>12}" + "".join(f"{m:>15}" for m in metrics)]
    for row in result["artifacts"]:
        lines.append(f"{row['artifact']:<16}{row['quantize']:<10}{row['bytes'] / 1024:>9.1f} KB"
                     + "".join(f"{row[m]:>15.6g}" for m in metrics))
    return "\n".join(lines)


def _staging(export_dir: str) -> tuple[str, str | None]:
    """A new directory of nntrain's to build the export in, and the outermost directory made for it (None: none).

    Locally: inside export_dir when it is a directory already (empty: checked), else beside it (its parents made);
    on object stores, export_dir itself (written in place).
    """
    if not rundir.is_local(export_dir):
        created = rundir.first_missing(export_dir)
        rundir.makedirs(export_dir)
        return export_dir, created
    target = os.path.abspath(export_dir)
    if os.path.isdir(target):
        return tempfile.mkdtemp(prefix=PARTIAL, dir=target), None
    created = rundir.first_missing(target)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(target)}{PARTIAL}", dir=os.path.dirname(target)), created


def _discard(staging: str, export_dir: str, created: str | None) -> None:
    """After a failed export: removes what it created, and nothing else."""
    if created:
        rundir.remove(created)
    if staging != export_dir:
        rundir.remove(staging)
    elif not created:  # an object store's export_dir that was there, empty: what the export wrote into it
        for name in rundir.listdir(export_dir):
            rundir.remove(rundir.join(export_dir, name))


def _publish(staging: str, export_dir: str) -> None:
    """Moves the built export into export_dir: renamed into place, or its entries moved into the (empty) directory
    export_dir already is, which stays (it may be the working directory)."""
    if staging == export_dir:
        return
    target = os.path.abspath(export_dir)
    if not os.path.isdir(target):
        os.rename(staging, target)
        return
    for name in os.listdir(staging):
        os.rename(os.path.join(staging, name), os.path.join(target, name))
    os.rmdir(staging)


def _row(name: str, path: str, score: dict, quantize: str = "none") -> dict:
    return {"artifact": name, "quantize": quantize, "bytes": _size(path), **score}


def _size(path: str) -> int:
    """Bytes of a file, or of every file in a directory tree."""
    if not tf.io.gfile.isdir(path):
        return tf.io.gfile.stat(path).length
    return sum(tf.io.gfile.stat(rundir.join(root, name)).length for root, _, names in tf.io.gfile.walk(path)
               for name in names)


def _keras_score(model: keras.Model, config, steps: int | None) -> dict:
    """The Keras model's accuracy (or mse) on the preprocessed eval split's first `steps` batches (None: all), as
    `evaluate` measures it."""
    results = _metrics(model, config, steps)
    key = "mse" if config.model.head == "regression" else "accuracy"
    bits = {"bits_per_byte": results["bits_per_byte"]} if "bits_per_byte" in results else {}
    return {key: float(results.get(key, results["loss"])), **bits}
