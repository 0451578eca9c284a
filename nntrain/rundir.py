"""The run directory: its layout, and every read and write of it, through `tf.io.gfile` (local, gs://, ram://).

model_dir layout:
  config.json        the resolved config (reproduce or resume the run)
  metrics.jsonl      one strict-JSON line per epoch (non-finite values as null)
  dataset.json       the data spec: shapes, split sizes, class names (copied into exports)
  checkpoints/       step-N/ (a tensor bundle of every variable: model, optimizer, RNG states; the last
                     `train.keep_checkpoints`; runs before it wrote step-N.keras or TensorFlow's format, which
                     still resume), best.keras,
                     state.json (the commit point: which step, RNG states, best value)
  logs/              TensorBoard
  model.keras        the final model
  workers/N/         multi-worker only: worker N's own checkpoints/ (the chief, worker 0, writes all of the above)

Commits: every file is written to a temporary sibling (`tmp-NAME`) and renamed over its target: atomic on a local
disk; on object stores (gs://) a rename is a server-side copy, which replaces the object whole. A checkpoint's
commit point is state.json, written last: a run killed at any moment resumes from what state.json names.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from nntrain.compat import keras_saving
from nntrain.errors import NntrainError, op_message

CONFIG = "config.json"  # the resolved config (config.save, config.load_saved)
METRICS = "metrics.jsonl"
DATASET = "dataset.json"  # the data spec: shapes, split sizes, class names (data/spec.py)
_PROBE = ".nntrain-probe-"  # check's test directories
CHECKPOINTS = "checkpoints"
LOGS = "logs"
FINAL_MODEL = "model.keras"
WORKERS = "workers"
STATE = "state.json"
BEST = "best.keras"
TMP_PREFIX = "tmp-"
MOVE_ASIDE = "restore it, or move the run aside and train into a new --model_dir"
_ONE_SLASH = re.compile(r"([A-Za-z][\w+.-]*):/(?!/)")  # a URL missing a slash, e.g. gs:/bucket/dir


class NonFiniteWeights(NntrainError):
    """A weight became NaN or infinite: the model is not saved."""

    exit_code = 1


class Damaged(NntrainError):
    """A file of the run directory is not what nntrain wrote: unreadable, of the wrong type, or naming a missing
    file."""


def damaged(path: str, problem: str, fix: str = MOVE_ASIDE) -> Damaged:
    """The one line for a damaged file: which file, what is wrong, the fix."""
    return Damaged(f"{path} is damaged ({problem}): {fix}")


def join(path: str, *names: str) -> str:
    """`path/name/...` for local paths and URLs alike."""
    return tf.io.gfile.join(path, *names)


def is_local(path: str) -> bool:
    """True for a path on this machine's disk (no `scheme://`)."""
    return "://" not in path


def check(model_dir: str, what: str = "model_dir") -> None:
    """Fails with one line, before anything is written, if model_dir (or another `what`) cannot be opened or written."""
    if not model_dir:
        raise NntrainError(f"no {what} given: pass --{what}=DIR (it is created if missing)")
    if one_slash := _ONE_SLASH.match(model_dir):  # `gs:/b/x` would be a local folder `./gs:`
        scheme = one_slash.group(1)
        raise NntrainError(f"{what} '{model_dir}' has one slash after '{scheme}:': write "
                           f"{scheme}://{model_dir[one_slash.end():]} (or ./{model_dir} for a local folder)")
    if not is_local(model_dir):
        _check_url(model_dir, what)
        return
    existing = os.path.abspath(model_dir)
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NntrainError(f"{what} '{model_dir}' cannot be created: '{existing}' is a file; choose another path")
    # Every directory of it that nntrain writes into (a run's checkpoints/, logs/...), before a first file changes.
    directories = list(_walk(existing)) if existing == os.path.abspath(model_dir) else [existing]
    for directory in directories:
        try:  # a real write: root passes every permission check, yet cannot write under /proc (or chattr +i)
            shutil.rmtree(tempfile.mkdtemp(prefix=_PROBE, dir=directory))
        except OSError as e:
            if isinstance(e, FileNotFoundError) and not os.path.isdir(directory):
                continue  # removed meanwhile by another worker starting on this model_dir (a stale checkpoint)
            raise NntrainError(f"{what} '{model_dir}' is not writable (creating a directory in '{directory}' failed: "
                               f"{e.strerror or e}): make it writable, or choose a directory you can write to") from e


def _walk(top: str) -> Iterator[str]:
    """Every directory under `top`, without the probes of other processes checking the same model_dir."""
    for root, directories, _ in os.walk(top):
        directories[:] = [d for d in directories if not d.startswith(_PROBE)]
        yield root


def _check_url(url: str, what: str) -> None:
    """One line for a URL without a path, of a scheme TensorFlow cannot open, or that does not answer."""
    scheme, _, path = url.partition("://")
    if not path.strip("/"):
        raise NntrainError(f"{what} '{url}' names no directory: give one, e.g. "
                           f"{scheme}://{'BUCKET/DIR' if scheme == 'gs' else 'DIR'}")
    try:
        tf.io.gfile.exists(url)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError) as e:
        raise NntrainError(f"{what} '{url}': TensorFlow cannot open '{scheme}://' paths here "
                           f"({e.message.split(' (')[0]}); use a local path, gs://BUCKET/DIR or ram://") from e
    except tf.errors.OpError as e:  # e.g. no network, or no credentials
        raise NntrainError(f"{what} '{url}' cannot be reached ({op_message(e)}): check the network, the bucket "
                           "name and your credentials (gcloud auth application-default login)") from e


def exists(path: str) -> bool:
    return tf.io.gfile.exists(path)


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(path)


def listdir(path: str) -> list[str]:
    """Names in directory `path` ([] if it does not exist)."""
    return sorted(name.rstrip("/") for name in tf.io.gfile.listdir(path)) if tf.io.gfile.isdir(path) else []


def remove(path: str) -> None:
    """Deletes a file or a directory tree if it is there."""
    if tf.io.gfile.isdir(path):
        tf.io.gfile.rmtree(path)
    elif tf.io.gfile.exists(path):
        tf.io.gfile.remove(path)


def move(source: str, path: str) -> None:
    """Renames a file or directory (atomic on a local disk; only used where the target is absent)."""
    tf.io.gfile.rename(source, path)


def first_missing(path: str) -> str | None:
    """The outermost directory of `path` that does not exist yet (what creating `path` creates), or None."""
    missing = None
    while path and not exists(path):
        missing, path = path, path.rstrip("/").rpartition("/")[0]
    return missing


def glob(pattern: str) -> list[str]:
    return sorted(tf.io.gfile.glob(pattern))


def _staging(path: str) -> str:
    """A fresh temporary sibling of `path` to write before the commit (a rename over `path`)."""
    directory, name = path.rsplit("/", 1) if "/" in path else ("", path)
    tmp = join(directory, f"{TMP_PREFIX}{name}") if directory else f"{TMP_PREFIX}{name}"
    remove(tmp)  # a killed writer's leftover; some filesystems (ram://) do not truncate on overwrite
    return tmp


def _commit(tmp: str, path: str) -> None:
    """Atomic on a local disk; on object stores a server-side copy, which replaces the object whole."""
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write_text(path: str, text: str) -> None:
    """Writes `text` to `path` whole: a reader sees the old file or the new one, never half of one."""
    tmp = _staging(path)
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    _commit(tmp, path)


def write_bytes(path: str, data: bytes) -> None:
    """Like write_text, for bytes."""
    tmp = _staging(path)
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(data)
    _commit(tmp, path)


def read_text(path: str) -> str | None:
    """The file's text, or None if there is no such file."""
    if not tf.io.gfile.exists(path):
        return None
    with tf.io.gfile.GFile(path, "r") as f:
        return f.read()


def strict(value: Any) -> Any:
    """`value` with every non-finite float (NaN, inf) replaced by None, so that it is strict JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: strict(v) for key, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(v) for v in value]
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """Strict JSON (non-finite floats as null)."""
    return json.dumps(strict(value), allow_nan=False, **kwargs)


def read_json(path: str, fix: str = MOVE_ASIDE) -> Any:
    """The parsed JSON file, or None if there is no such file; Damaged (with `fix`) if it is no JSON."""
    return read_json_text(path, fix)[1]


def read_json_text(path: str, fix: str = MOVE_ASIDE) -> tuple[str | None, Any]:
    """The JSON file's text and its parsed value, from one read; (None, None) if there is no such file."""
    text = None
    try:
        text = read_text(path)
        return text, None if text is None else json.loads(text)
    except ValueError as e:  # UnicodeDecodeError and JSONDecodeError
        raise damaged(path, "empty" if text == "" else f"not JSON: {e}", fix) from None


def read_json_object(path: str, fix: str = MOVE_ASIDE) -> dict | None:
    """Like read_json, for a file that holds one JSON object; Damaged if it holds anything else."""
    return json_object(path, read_json(path, fix), fix)


def json_object(path: str, value: Any, fix: str = MOVE_ASIDE) -> dict | None:
    """`value`, parsed from `path`, if it is a JSON object or None; Damaged if it is anything else."""
    if value is not None and not isinstance(value, dict):
        raise damaged(path, f"a JSON {type(value).__name__}, not an object", fix)
    return value


def write_json(path: str, value: Any) -> None:
    write_text(path, dumps(value, indent=2, sort_keys=True) + "\n")


def read_jsonl(path: str) -> list[dict]:
    """One dict per non-empty line ([] if there is no such file)."""
    return read_jsonl_text(path)[1]


def read_jsonl_text(path: str) -> tuple[str | None, list[dict]]:
    """The JSON-lines file's text (None if there is no such file) and one dict per non-empty line, from one read."""
    try:
        text = read_text(path)
        records = [json.loads(line) for line in (text or "").splitlines() if line.strip()]
    except ValueError as e:
        raise damaged(path, f"not JSON lines: {e}") from None
    if not all(isinstance(r, dict) for r in records):
        raise damaged(path, "a line is no JSON object")
    return text, records


def write_jsonl(path: str, records: list[dict]) -> None:
    """Writes `records`, one strict-JSON line each, as the whole file.

    Never appended: object stores (gs://) cannot append, and a rewrite staged and renamed leaves a reader the old
    file or the new one, never a torn last line. A writer keeps the lines in memory, so adding one costs this one
    write (O(file), a line per epoch) and no read.
    """
    write_text(path, "".join(dumps(r) + "\n" for r in records))


def save_model(model: keras.Model, path: str) -> None:
    """model.save (with optimizer state), committed as a whole file; never with a NaN/inf weight."""
    require_finite_weights(model, path)
    keras_saving.patch()
    tmp = _staging(path)
    model.save(tmp, overwrite=True)
    _commit(tmp, path)


def require_finite_weights(model: keras.Model, path: str) -> None:
    """Raises NonFiniteWeights, naming the first bad variable, before `path` is written.

    The one rule for non-finite weights: every model save (checkpoints, best, final) goes through `save_model` or
    a step checkpoint's writer (run/bundles.py), which call `check_finite` on every weight first.
    """
    for variable in model.weights:
        check_finite(variable.path, keras.ops.convert_to_numpy(variable.value), path)


def check_finite(name: str, values: np.ndarray, path: str) -> None:
    """NonFiniteWeights if the floating-point weight `name` holds a NaN or infinity (`path` is not written)."""
    if np.issubdtype(values.dtype, np.floating) and not np.isfinite(values).all():
        bad = int(values.size - np.isfinite(values).sum())
        raise NonFiniteWeights(f"weight {name} holds {bad} NaN/inf value(s): training stopped and {path} was not "
                               "written; lower optimizer.learning_rate or set optimizer.global_clip_norm, and check "
                               "the data for extreme values")


def copy(source: str, path: str) -> None:
    """Copies a file (the same bytes: milliseconds, where a second model.save took ~50 ms)."""
    tmp = _staging(path)
    tf.io.gfile.copy(source, tmp)
    _commit(tmp, path)


def remove_partial_writes(directory: str, kept: list[str] = ()) -> None:
    """Removes what a killed run left behind in `directory`: temporary files, and step checkpoints that state.json
    does not name (`kept`: a write killed before its commit)."""
    for name in listdir(directory):
        if name.startswith(TMP_PREFIX) or (name.startswith("step-") and name not in kept):
            remove(join(directory, name))


def checkpoint_dir(model_dir: str) -> str:
    return join(model_dir, CHECKPOINTS)


def worker_dir(model_dir: str, task_id: int) -> str:
    return join(model_dir, WORKERS, str(task_id))


def read_state(directory: str) -> dict | None:
    """The checkpoint directory's state.json (None before the first checkpoint), its fields checked."""
    path = join(directory, STATE)
    fix = f"restore it, or delete {directory} to train from scratch (or use a new --model_dir)"
    state = read_json_object(path, fix)
    if state is None:
        return None
    problem = _state_problem(state)
    if problem:
        raise damaged(path, problem, fix)
    return state


def _state_problem(state: dict) -> str | None:
    """What is wrong with the types of a parsed state.json, or None."""
    if not isinstance(state.get("latest"), str) or not state["latest"]:
        return f"'latest' is {state.get('latest')!r}, not a checkpoint file name"
    step = state.get("step", 0)
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        return f"'step' is {step!r}, not a step number"
    kept = state.get("kept", [])
    if not isinstance(kept, list) or not all(isinstance(name, str) for name in kept):
        return f"'kept' is {kept!r}, not a list of file names"
    if not isinstance(state.get("rng", []), list):
        return f"'rng' is {state['rng']!r}, not a list"
    return None


def keras_file_problem(path: str) -> str | None:
    """Why the .keras file at `path` cannot be loaded (missing, truncated, not a Keras archive), or None.

    Reads the zip archive's directory and each member's CRC, before anything is built from it (~20 ms for an
    80 MB file on a local disk, where loading it takes ~0.3 s).
    """
    if not exists(path):
        return "missing"
    if tf.io.gfile.stat(path).length == 0:
        return "empty"
    try:
        with tf.io.gfile.GFile(path, "rb") as f, zipfile.ZipFile(f) as archive:
            corrupt, names = archive.testzip(), set(archive.namelist())
    except (zipfile.BadZipFile, OSError, EOFError, ValueError, tf.errors.OpError) as e:
        return f"not a readable .keras archive: {e}"
    if corrupt:
        return f"{corrupt} in it is corrupt"
    if not {"config.json", "model.weights.h5"} <= names:
        return "not a Keras model archive (no config.json and model.weights.h5)"
    return None
