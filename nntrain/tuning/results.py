"""Search results: progress lines, the leaderboard, results.csv / results.json and best_config.py in model_dir.

Every file is written to a temporary name and renamed: a reader never sees half a file.
"""

from __future__ import annotations

import csv
import io
from typing import Any

import keras_tuner
import ml_collections

from nntrain import config as nn_config
from nntrain import rundir
from nntrain.tuning.hypermodel import TRIAL_FACTS, HyperModel

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
BEST_CONFIG = "best_config.py"
HYPERBAND_EPOCHS = "tuner/epochs"  # Hyperband's own hyperparameters start with "tuner/"


def row(trial: keras_tuner.engine.trial.Trial, hypermodel: HyperModel) -> dict[str, Any]:
    """One trial as a JSON-ready dict: status, score, settings, base and effective learning rate, facts."""
    values = trial.hyperparameters.values
    settings = hypermodel.trial(values)
    metrics = {name: trial.metrics.get_last_value(name) for name in trial.metrics.metrics}
    return {
        "trial": trial.trial_id,
        "status": str(trial.status).lower(),
        "score": trial.score if trial.status == keras_tuner.engine.trial.TrialStatus.COMPLETED else None,
        "settings": {key: list(v) if isinstance(v, tuple) else v for key, v in settings.settings.items()},
        "base_learning_rate": settings.base_learning_rate,  # settings["optimizer.learning_rate"]: the scaled rate
        "lr_rule": settings.lr_rule,
        **{fact: _int_or_float(metrics.pop(fact, None)) for fact in TRIAL_FACTS},
        "metrics": metrics,
        "hyperparameters": values,
        "error": _last_line(trial.message),
    }


def _int_or_float(value: float | None) -> int | float | None:
    return int(value) if value is not None and float(value).is_integer() else value


def _last_line(message: str | None) -> str | None:
    """`module.Error: text` from the last line of a traceback, as `Error: text`."""
    lines = [line for line in (message or "").splitlines() if line.strip()]
    if not lines:
        return None
    name, sep, text = lines[-1].partition(": ")
    return f"{name.rsplit('.', 1)[-1]}{sep}{text}"


def describe(r: dict[str, Any]) -> str:
    """A trial's settings on one line, the learning rate as base -> effective."""
    parts = [f"{_short(key)}={_fmt(value)}" for key, value in r["settings"].items()
             if key != "optimizer.learning_rate"]
    base, effective = r["base_learning_rate"], r["settings"]["optimizer.learning_rate"]
    lr = f"lr={base:.3g}" if base == effective else f"lr={base:.3g}->{effective:.3g} ({r['lr_rule']})"
    return " ".join([*parts, lr])


def _short(key: str) -> str:
    """`train.batch_size` -> `batch_size`; `optimizer.name` -> `optimizer`."""
    section, _, leaf = key.rpartition(".")
    return section.rsplit(".", 1)[-1] if leaf == "name" and section else leaf


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def number(oracle: Any, trial: keras_tuner.engine.trial.Trial) -> str:
    """`ID (k/N)`: keras-tuner's trial id, its count from 1 and the number of trials ('?': no maximum)."""
    return f"{trial.trial_id} ({int(trial.trial_id) + 1}/{oracle.max_trials or '?'})"


def progress_line(oracle: Any, trial: keras_tuner.engine.trial.Trial, hypermodel: HyperModel) -> str:
    """`trial k/N: settings -> score (best so far ...)` for a trial the oracle has ended."""
    r = row(trial, hypermodel)
    name = oracle.objective.name
    outcome = f"{name}={r['score']:.4g}" if r["score"] is not None else f"{r['status']}: {r['error']}"
    best = [t for t in oracle.get_best_trials(1) if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]
    best_text = f"best so far {best[0].score:.4g} (trial {best[0].trial_id})" if best else "no trial done yet"
    return f"trial {number(oracle, trial)}: {describe(r)} -> {outcome} ({best_text})"


def ranked(rows: list[dict], direction: str) -> list[dict]:
    """Completed trials best first, then the others in trial order."""
    done = sorted((r for r in rows if r["score"] is not None), key=lambda r: r["score"],
                  reverse=direction == "max")
    return done + sorted((r for r in rows if r["score"] is None), key=lambda r: r["trial"])


def leaderboard(rows: list[dict], objective: str) -> str:
    """The ranked trials as a text table."""
    header = f"{'rank':>4}  {'trial':>5}  {objective:>12}  {'epochs':>6}  {'steps/ep':>8}  {'seconds':>7}  settings"
    lines = [header]
    for rank, r in enumerate(rows, 1):
        score = f"{r['score']:.4f}" if r["score"] is not None else r["status"]
        epochs = "" if r["epochs"] is None else f"{r['epochs']:.0f}"
        steps = "" if r["steps_per_epoch"] is None else f"{r['steps_per_epoch']:.0f}"
        seconds = "" if r["seconds"] is None else f"{r['seconds']:.1f}"
        lines.append(f"{rank:>4}  {r['trial']:>5}  {score:>12}  {epochs:>6}  {steps:>8}  {seconds:>7}  {describe(r)}")
    return "\n".join(lines)


def write_tables(model_dir: str, rows: list[dict], summary: dict) -> None:
    """results.json (summary and every trial) and results.csv (one line per trial, best first)."""
    rundir.write_text(rundir.join(model_dir, RESULTS_JSON), rundir.dumps({**summary, "trials": rows}, indent=2) + "\n")
    keys = list(dict.fromkeys(key for r in rows for key in r["settings"]))
    columns = ["trial", "status", "score", *keys, "base_learning_rate", "lr_rule",
               *TRIAL_FACTS, "error"]
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(columns)
    for r in rows:
        writer.writerow([_fmt_csv(r["settings"].get(c) if c in keys else r[c]) for c in columns])
    rundir.write_text(rundir.join(model_dir, RESULTS_CSV), text.getvalue())


def _fmt_csv(value: Any) -> Any:
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return "" if value is None else value


def write_best_config(model_dir: str, best: dict, hypermodel: HyperModel, objective: str) -> tuple[str, str]:
    """best_config.py (an experiment file with the best trial's config) and the command that trains it."""
    values = best["hyperparameters"]
    config = hypermodel.trial(values).config
    if HYPERBAND_EPOCHS in values:
        config.train.epochs = int(values[HYPERBAND_EPOCHS])
    path = rundir.join(model_dir, BEST_CONFIG)
    command = f"nntrain train --experiment={path} --model_dir={rundir.join(model_dir, 'best')}"
    doc = (f"Best trial ({best['trial']}) of the search in {model_dir}: {objective}={best['score']:.6g}.\n\n"
           f"Settings: {describe(best)}\n"
           f"(learning rate: base {best['base_learning_rate']:.6g} at batch size "
           f"{hypermodel.config.train.batch_size}, {best['lr_rule']} scaling -> optimizer.learning_rate "
           f"{best['settings']['optimizer.learning_rate']:.6g})"
           f"\n\n  {command}\n")
    source = _config_source(config, doc)
    namespace: dict[str, Any] = {}
    exec(compile(source, path, "exec"), namespace)  # the file as `nntrain train --experiment` will run it
    reloaded = nn_config.to_dict(namespace["get_config"]())
    expected = nn_config.to_dict(config)
    if {**reloaded, "experiment": None} != {**expected, "experiment": None}:
        raise RuntimeError(f"{path} does not reproduce the best trial's config")  # a bug, not a user mistake
    rundir.write_text(path, source)
    return path, command


def _config_source(config: ml_collections.ConfigDict, docstring: str) -> str:
    """An experiment file whose get_config() returns `config`: base_config() plus the fields that differ."""
    base = _flat(nn_config.base_config().to_dict())
    lines = [f"config.{key} = {value!r}" for key, value in _flat(config.to_dict()).items()
             if key != "experiment" and (key not in base or base[key] != value)]
    body = "\n".join(f"    {line}" for line in lines)
    return (f'"""{docstring}"""\n\nfrom nntrain.config import base_config\n\n\n'
            f"def get_config():\n    config = base_config()\n{body}\n    return config\n")


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


