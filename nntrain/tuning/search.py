"""`run(...)`: one search, here (role ''), as the chief of several machines, or as one of their workers.

model_dir layout (chief or single machine):
  search.json      what was searched (experiment config, space, tuner, objective): --resume checks it
  search/          keras-tuner's project: oracle state, trial_*/trial.json, checkpoints
  logs/            TensorBoard: the HParams config at the root, logs/<trial>/execution<k> per trial
  results.csv      the leaderboard, best first; results.json: the same with the summary
  best_config.py   an experiment file with the best trial's config (`nntrain train --experiment=...`)
Workers may share the chief's model_dir (Hyperband needs that: it continues other trials' checkpoints) or
use their own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import sys

import keras_tuner
import ml_collections
import tensorflow as tf

from nntrain import config as nn_config
from nntrain import data as nn_data
from nntrain import rundir
from nntrain.distribute import strategies
from nntrain.errors import NntrainError
from nntrain.logs import log, tensorflow_messages_hidden
from nntrain.run import guards
from nntrain.tuning import distributed, hparams, results, scaling, search_space, tuners
from nntrain.tuning.hypermodel import HyperModel

SETTINGS_FILE = "search.json"
_CONSECUTIVE_FAILURES = "Number of consecutive failures"  # keras-tuner's RuntimeError when it gives up


@dataclasses.dataclass(frozen=True)
class Options:
    """How to search: tuner, budget, objective, resume, learning-rate scaling and the distributed role."""

    tuner: str = "random"
    max_trials: int = 10
    objective: str | None = None  # None: config.train.monitor
    executions_per_trial: int = 1
    resume: bool = False
    lr_scaling: str = "auto"
    role: str = ""  # '' (this machine alone) | chief | worker
    oracle_address: str = distributed.DEFAULT_ADDRESS
    worker_id: str | None = None
    worker_timeout: float = 120.0  # seconds a worker may be silent (and the chief may wait for the first)
    verbose: bool = True  # print the leaderboard at the end


def run(config: ml_collections.ConfigDict, space: dict[str, search_space.Spec], model_dir: str,
        strategy: tf.distribute.Strategy, options: Options) -> dict:
    """Runs the search; returns the results (chief and single machine) or the trials this worker ran."""
    _check(config, space, model_dir, strategy, options)
    spec = nn_data.build(config.data, config.train.batch_size, strategy, seed=config.seed).spec
    hypermodel = HyperModel(config, space, strategy, options.lr_scaling, spec)
    objective = tuners.objective(options.objective or config.train.monitor, hypermodel)
    hypermodel.build(keras_tuner.HyperParameters())  # the experiment's own values must build, before any write
    if options.role == "worker":
        return _work(hypermodel, objective, model_dir, strategy, options)
    settings = _settings(config, space, objective.name, options)
    _check_resume(model_dir, settings, options.resume)
    rundir.makedirs(model_dir)
    with contextlib.redirect_stdout(sys.stderr):  # keras-tuner prints; stdout is for results
        tuner = tuners.create(options.tuner, hypermodel, objective, options.max_trials, options.executions_per_trial,
                              model_dir, strategy)
    rundir.write_json(rundir.join(model_dir, SETTINGS_FILE), settings)
    log_dir = rundir.join(model_dir, hparams.LOGS)
    hparams.write_config(log_dir, tuner.oracle.get_space(), config)
    oracle = tuner.oracle
    oracle.verbose = 0  # keras-tuner's own multi-line report per trial; the progress lines replace it
    log(f"searching {config.get('experiment', '?')} with {options.tuner} for {objective.name}: "
        f"{len(oracle.end_order)} of {options.max_trials} trials done before; results in {model_dir}")
    # Every trial builds a new model, so TensorFlow's "triggered tf.function retracing" warning is expected.
    try:
        with contextlib.redirect_stdout(sys.stderr), tensorflow_messages_hidden("tf.function retracing"):
            if options.role == "chief":
                tuner.save()
                host, port = distributed.parse_address(options.oracle_address)
                distributed.serve(oracle, host, port, options.worker_timeout, lambda trial_id: log(
                    results.progress_line(oracle, oracle.get_trial(trial_id), hypermodel)))
            else:
                tuner.search(callbacks=[hparams.callback(log_dir)], verbose=0)
    except RuntimeError as e:
        if _CONSECUTIVE_FAILURES not in str(e):
            raise
        _report(oracle, hypermodel, model_dir, settings, options)
        raise NntrainError(f"{tuners.MAX_CONSECUTIVE_FAILED_TRIALS} trials in a row failed, the last with: "
                           f"{str(e).splitlines()[-1]}; see {rundir.join(model_dir, results.RESULTS_CSV)}") from e
    except distributed.SearchIncomplete:
        _report(oracle, hypermodel, model_dir, settings, options)
        raise
    return _report(oracle, hypermodel, model_dir, settings, options)


def _check(config: ml_collections.ConfigDict, space: dict, model_dir: str, strategy: tf.distribute.Strategy,
           options: Options) -> None:
    """Everything that can be checked before a file is written."""
    if not model_dir:
        raise NntrainError("no model_dir given: pass --model_dir=DIR for the search's trials and results")
    guards.check_search_dir(model_dir)
    guards.check_metrics(config.train.metrics)
    if options.role not in ("", *distributed.ROLES):
        raise NntrainError(f"--role={options.role!r} is not allowed: use chief or worker (or leave it out)")
    if options.role:
        distributed.parse_address(options.oracle_address)
    if strategies.kind(strategy) == "multi_worker":
        raise NntrainError("trials run on one machine (keras-tuner supports single-worker strategies): use "
                           "--strategy=auto|cpu|one_device|mirrored|tpu, and --role=chief/worker to search "
                           "on several machines")
    tuners.check(options.tuner, options.max_trials, options.executions_per_trial)
    scaling.rule_for(options.lr_scaling, config.optimizer.name)
    search_space.validate(space, config)


def _settings(config: ml_collections.ConfigDict, space: dict, objective: str, options: Options) -> dict:
    """What must not change when a search is resumed."""
    return {"experiment": nn_config.to_dict(config), "search_space": {k: repr(v) for k, v in space.items()},
            "tuner": options.tuner, "objective": objective, "lr_scaling": options.lr_scaling}


def _check_resume(model_dir: str, settings: dict, resume: bool) -> None:
    saved = rundir.read_json(rundir.join(model_dir, SETTINGS_FILE))
    existing = saved is not None or rundir.exists(rundir.join(model_dir, tuners.PROJECT))
    if existing and not resume:
        raise NntrainError(f"model_dir '{model_dir}' already holds a search: pass --resume to continue it, or "
                           "choose another --model_dir")
    if saved is not None:
        changed = sorted(key for key in settings if saved.get(key) != settings[key])
        if changed:
            raise NntrainError(f"--resume: the search in '{model_dir}' used another {', '.join(changed)}; resume "
                               "it with the same experiment, overrides and flags, or use another --model_dir")


def _work(hypermodel: HyperModel, objective: keras_tuner.Objective, model_dir: str, strategy: tf.distribute.Strategy,
          options: Options) -> dict:
    """A worker: runs the trials the chief hands out until it says stop."""
    host, port = distributed.parse_address(options.oracle_address)
    tuner_id = distributed.worker_id(options.worker_id)
    with distributed.worker_environment(host, port, tuner_id, rpc_timeout=options.worker_timeout + 5):
        distributed.wait_for_chief(host, port, options.worker_timeout)
        rundir.makedirs(model_dir)
        log(f"worker {tuner_id}: running trials for the chief at {host}:{port}")
        with contextlib.redirect_stdout(sys.stderr):
            tuner = tuners.create(options.tuner, hypermodel, objective, options.max_trials,
                                  options.executions_per_trial, model_dir, strategy)
            tuner.oracle = distributed.PacedClient(tuner.oracle)
            interval = min(2.0, options.worker_timeout / 4)
            with distributed.Heartbeat(host, port, tuner_id, interval, options.worker_timeout):
                tuner.search(callbacks=[hparams.callback(rundir.join(model_dir, hparams.LOGS))], verbose=0)
    log(f"worker {tuner_id}: done, ran trial(s) {', '.join(tuner.finished) or 'none'}")
    return {"role": "worker", "worker_id": tuner_id, "trials": tuner.finished}


def _report(oracle: keras_tuner.Oracle, hypermodel: HyperModel, model_dir: str, settings: dict,
            options: Options) -> dict:
    """Writes the leaderboard files and best_config.py; prints the leaderboard; returns the results."""
    objective = oracle.objective
    rows = results.ranked([results.row(t, hypermodel) for t in oracle.trials.values()], objective.direction)
    best = rows[0] if rows and rows[0]["score"] is not None else None
    best_config, command = results.write_best_config(model_dir, best, hypermodel, objective.name) if best \
        else (None, None)
    summary = {"experiment": hypermodel.config.get("experiment"), "tuner": settings["tuner"],
               "objective": objective.name, "direction": objective.direction, "max_trials": options.max_trials,
               "best_trial": best["trial"] if best else None, "best_score": best["score"] if best else None,
               "best_config": best_config, "command": command}
    results.write_tables(model_dir, rows, summary)
    if options.verbose:
        print(results.leaderboard(rows, objective.name))
        print(f"best: trial {best['trial']} {objective.name}={best['score']:.4f}; train it with:\n  {command}"
              if best else "no trial completed")
    return {**summary, "trials": rows, "results_csv": rundir.join(model_dir, results.RESULTS_CSV)}

