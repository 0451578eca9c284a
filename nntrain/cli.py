"""`nntrain <command> [--flags] [--config.KEY=VALUE ...]`: flags only, the work is in the library.

Commands:
  train      train an experiment into --model_dir (re-running resumes)
  evaluate   evaluate a trained --model_dir on its eval split
  export     export a trained --model_dir to --export_dir (.keras and SavedModel)
  doctor     check versions, devices, TPU kernels, gs:// support and --model_dir
  bench      steady-state throughput, input-pipeline headroom, FLOPs, MFU and memory of an experiment
  launch     run a train command as --workers local multi-worker processes: launch --workers=2 -- train ...
  preflight  on CPU, check an experiment for --target=tpu|gpu: XLA, shapes, ops, batch, paths, memory
  data-service  a tf.data service (dispatcher + --workers) on --port for --config.data.service (every interface)
  tune       hyperparameter search (keras-tuner) over the experiment's search space into --model_dir
  find-batch-size  examples/s of doubling batch sizes; the largest that still speeds training
  find-lr    learning-rate range test: lr_range.png and lr_range.csv in --model_dir, a suggested range

Examples:
  nntrain train --experiment=mnist_mlp --model_dir=runs/mnist_mlp --config.train.epochs=3
  nntrain evaluate --model_dir=runs/mnist_mlp --json
  nntrain export --model_dir=runs/mnist_mlp --export_dir=exports/mnist_mlp
  nntrain doctor --json
  nntrain bench --experiment=mnist_mlp --steps=200 --json
  nntrain launch --workers=2 -- train --experiment=mnist_mlp --model_dir=runs/mnist_mlp_mw
  nntrain preflight --experiment=cifar10_resnet --target=tpu --model_dir=gs://BUCKET/runs/cifar10
  nntrain data-service --port=5050 --workers=2
  nntrain tune --experiment=mnist_mlp --model_dir=runs/tune_mnist --tuner=random --max_trials=10
  nntrain find-lr --experiment=mnist_mlp --model_dir=runs/lr_mnist

Flags can also come from a file: --flagfile=FILE. All flags: --helpfull.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable

from absl import app, flags, logging

from nntrain import api, quiet, tf_config
from nntrain import config as nn_config
from nntrain.errors import NntrainError

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Experiment name (see nntrain/experiments/) or path to an experiment .py file.")
flags.DEFINE_string("model_dir", None, "Directory for the run's config, checkpoints, logs and model.")
flags.DEFINE_string("strategy", "auto", "auto | cpu | one_device | mirrored | tpu | multi_worker")
flags.DEFINE_string("tpu", "", "TPU to use with --strategy=tpu: 'local' on a TPU VM, a TPU name, or grpc://HOST:PORT.")
flags.DEFINE_string("export_dir", None, "Where `export` writes model.keras and saved_model/.")
flags.DEFINE_string("checkpoint", "final", "Which model `evaluate`/`export` use: final | best | latest.")
flags.DEFINE_boolean("json", False, "Print one JSON object on stdout instead of text.")
flags.DEFINE_integer("steps", 100, "`bench`: training steps timed after the warm-up (rounded up to whole "
                     "executions of steps_per_execution).")
flags.DEFINE_string("worker_hosts", "", "Multi-worker: every worker's HOST:PORT, comma-separated, in order "
                    "(builds TF_CONFIG; implies --strategy=multi_worker).")
flags.DEFINE_integer("task_index", None, "Multi-worker: this worker's index in --worker_hosts (0 is the chief).")
flags.DEFINE_integer("workers", 2, "`launch`: local worker processes to start; `data-service`: tf.data workers.")
flags.DEFINE_integer("port", 5050, "`data-service`: the dispatcher's port (0: any free port).")
flags.DEFINE_float("max_seconds", 0, "`data-service`: stop after this many seconds (0: run until Ctrl-C).")
flags.DEFINE_enum("target", "tpu", ["tpu", "gpu"], "`preflight`: the accelerator to check the experiment for.")
flags.DEFINE_integer("tpu_cores", 8, "`preflight --target=tpu`: TPU cores (replicas); more than 8 is multi-host.")
flags.DEFINE_integer("gpus", 1, "`preflight --target=gpu`: GPUs (replicas).")
flags.DEFINE_string("tuner", "random", "`tune`: random | bayesian | hyperband | grid.")
flags.DEFINE_integer("max_trials", 10, "`tune`: how many trials (hyperparameter sets) at most.")
flags.DEFINE_string("objective", None, "`tune`: the metric to optimize, e.g. val_accuracy (default: train.monitor).")
flags.DEFINE_integer("executions_per_trial", 1, "`tune`: trainings per trial, from new initializations; averaged.")
flags.DEFINE_boolean("resume", False, "`tune`: continue the search in --model_dir; finished trials are not rerun.")
flags.DEFINE_string("lr_scaling", "auto", "`tune`: scale the base learning rate to each trial's batch size: "
                    "auto (linear for sgd, sqrt otherwise) | linear | sqrt | none.")
flags.DEFINE_string("role", "", "`tune` on several machines: chief (serves the search) or worker (runs trials).")
flags.DEFINE_string("oracle_address", "127.0.0.1:8000", "`tune --role`: HOST:PORT the chief listens on and "
                    "workers connect to (127.0.0.1: this machine only).")
flags.DEFINE_string("worker_id", None, "`tune --role=worker`: this worker's name (default: worker-HOST-PID).")
flags.DEFINE_float("worker_timeout", 120.0, "Multi-worker `train`: seconds to wait for every worker to join, "
                   "and for a silent peer; `tune --role`: for a silent worker (or chief) before giving up.")
flags.DEFINE_integer("max_batch_size", None, "`find-batch-size`: the largest batch size to try (default: the "
                     "train split's size).")
flags.DEFINE_integer("batch_steps", 20, "`find-batch-size`: training steps timed at each batch size.")
flags.DEFINE_float("min_lr", 1e-6, "`find-lr`: the learning rate the range test starts at.")
flags.DEFINE_float("max_lr", 10.0, "`find-lr`: the learning rate the range test ends at.")
flags.DEFINE_integer("lr_steps", 100, "`find-lr`: training steps from --min_lr to --max_lr.")

USAGE_ERROR = 2


class _UsageError(NntrainError):
    pass


def _require(flag: str) -> str:
    value = getattr(FLAGS, flag)
    if not value:
        raise _UsageError(f"--{flag} is required for `{_command_name()}`")
    return value


def _command_name() -> str:
    return _COMMAND[0] if _COMMAND else "?"


def _print_result(result: dict, text: str) -> None:
    print(json.dumps(result, sort_keys=True) if FLAGS.json else text)


def _train(overrides: list[tuple[str, str]]) -> None:
    model_dir = _require("model_dir")
    config = nn_config.resolve(_require("experiment"), overrides)
    strategy = tf_config.use_worker_flags(FLAGS.worker_hosts, FLAGS.task_index, FLAGS.strategy)
    tf_config.set_worker_timeout(FLAGS.worker_timeout)
    metrics = api.train(config, model_dir, strategy=strategy, tpu=FLAGS.tpu)
    if FLAGS.json:
        print(json.dumps(metrics, sort_keys=True))


def _evaluate(overrides: list[tuple[str, str]]) -> None:
    metrics = api.evaluate(_require("model_dir"), FLAGS.checkpoint)
    _print_result(metrics, "\n".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                                     for k, v in metrics.items()))


def _export(overrides: list[tuple[str, str]]) -> None:
    result = api.export(_require("model_dir"), _require("export_dir"), FLAGS.checkpoint)
    _print_result(result, f"exported to {result['export_dir']} (model.keras, saved_model/); reloaded "
                          f"SavedModel matches the model to {result['max_abs_difference']:.2g}")


def _doctor(overrides: list[tuple[str, str]]) -> None:
    checks = api.doctor(FLAGS.model_dir)
    if FLAGS.json:
        print(json.dumps({"checks": checks}, sort_keys=True))
    else:
        for check in checks:
            fix = f"\n         fix: {check['fix']}" if check["fix"] else ""
            print(f"[{check['status']:>4}] {check['check']}: {check['detail']}{fix}")
    if any(check["status"] == "fail" for check in checks):
        sys.exit(1)


def _launch(overrides: list[tuple[str, str]]) -> None:
    from nntrain import launch

    code = launch.launch(FLAGS.workers, _CHILD_ARGS)
    if code:
        sys.exit(code)


def _preflight(overrides: list[tuple[str, str]]) -> None:
    from nntrain import preflight_checks

    config = nn_config.resolve(_require("experiment"), overrides)
    report = api.preflight(config, target=FLAGS.target, tpu_cores=FLAGS.tpu_cores, gpus=FLAGS.gpus, tpu=FLAGS.tpu,
                           model_dir=FLAGS.model_dir)
    _print_result(report, preflight_checks.format_report(report))
    if not report["ok"]:
        sys.exit(1)


def _data_service(overrides: list[tuple[str, str]]) -> None:
    from nntrain.data import service

    service.serve(FLAGS.port, FLAGS.workers, FLAGS.max_seconds)


def _bench(overrides: list[tuple[str, str]]) -> None:
    from nntrain import benchmark

    config = nn_config.resolve(_require("experiment"), overrides)
    result = api.bench(config, strategy=FLAGS.strategy, tpu=FLAGS.tpu, steps=FLAGS.steps)
    _print_result(result, benchmark.format_table(result))


def _tune(overrides: list[tuple[str, str]]) -> None:
    result = api.tune(_require("experiment"), _require("model_dir"), overrides, strategy=FLAGS.strategy,
                      tpu=FLAGS.tpu, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials, objective=FLAGS.objective,
                      executions_per_trial=FLAGS.executions_per_trial, resume=FLAGS.resume,
                      lr_scaling=FLAGS.lr_scaling, role=FLAGS.role, oracle_address=FLAGS.oracle_address,
                      worker_id=FLAGS.worker_id, worker_timeout=FLAGS.worker_timeout, verbose=not FLAGS.json)
    if FLAGS.json:
        print(json.dumps(result, sort_keys=True))


def _find_batch_size(overrides: list[tuple[str, str]]) -> None:
    from nntrain.tuning import find_batch_size

    config = nn_config.resolve(_require("experiment"), overrides)
    result = api.find_batch_size(config, strategy=FLAGS.strategy, tpu=FLAGS.tpu,
                                 max_batch_size=FLAGS.max_batch_size, num_steps=FLAGS.batch_steps)
    _print_result(result, find_batch_size.format_result(result))


def _find_lr(overrides: list[tuple[str, str]]) -> None:
    from nntrain.tuning import find_lr

    config = nn_config.resolve(_require("experiment"), overrides)
    result = api.find_lr(config, _require("model_dir"), strategy=FLAGS.strategy, tpu=FLAGS.tpu,
                         min_lr=FLAGS.min_lr, max_lr=FLAGS.max_lr, num_steps=FLAGS.lr_steps)
    _print_result(result, find_lr.format_result(result))


COMMANDS: dict[str, Callable[[list[tuple[str, str]]], None]] = {
    "train": _train, "evaluate": _evaluate, "export": _export, "doctor": _doctor, "launch": _launch,
    "bench": _bench, "tune": _tune, "find-batch-size": _find_batch_size, "find-lr": _find_lr,
    "preflight": _preflight, "data-service": _data_service,
}
_COMMAND: list[str] = []
_OVERRIDES: list[tuple[str, str]] = []
_CHILD_ARGS: list[str] = []  # after `--`: the command `launch` runs in each worker


def _fail(message: str, code: int = USAGE_ERROR) -> None:
    print(f"nntrain: error: {message}", file=sys.stderr)
    sys.exit(code)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing that keeps `--config.*` overrides for the config and reports bad flags in one line."""
    try:
        rest = FLAGS(argv, known_only=True)
    except flags.Error as e:
        _fail(f"{e}; see `nntrain --help`")
    positional, unknown = [], []
    _OVERRIDES.clear()
    _CHILD_ARGS.clear()
    if "--" in rest:
        _CHILD_ARGS[:] = rest[rest.index("--") + 1:]
        rest = rest[:rest.index("--")]
    for arg in rest[1:]:
        if arg.startswith("--config."):
            try:
                _OVERRIDES.append(nn_config.parse_override(arg))
            except NntrainError as e:
                _fail(str(e))
        elif arg.startswith("-"):
            unknown.append(arg)
        else:
            positional.append(arg)
    if unknown:
        _fail(f"unknown flag {unknown[0]}; see `nntrain --help` (config fields are set with --config.KEY=VALUE)")
    return rest[:1] + positional


def _main(argv: list[str]) -> None:
    if len(argv) != 2 or argv[1] not in COMMANDS:
        given = f"unknown command '{argv[1]}'" if len(argv) > 1 else "no command given"
        _fail(f"{given}: use one of {', '.join(COMMANDS)} (see `nntrain --help`)")
    _COMMAND[:] = [argv[1]]
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's Python INFO lines; --verbosity=0 brings them back
    if argv[1] != "launch":  # the launcher only starts processes
        quiet.import_tensorflow_quietly()
    try:
        COMMANDS[argv[1]](list(_OVERRIDES))
    except NntrainError as e:
        _fail(str(e), getattr(e, "exit_code", USAGE_ERROR))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    argv = list(sys.argv if argv is None else argv)
    if any(arg in ("-h", "--help", "-?") for arg in argv[1:]):
        print(__doc__)
        sys.exit(0)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ info lines drown nntrain's
    FLAGS.unparse_flags()
    app.run(_main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
