"""`nntrain COMMAND [--flags] [--config.KEY=VALUE ...]`: flags only, the work is in the library.

`nntrain --help` lists the commands; `nntrain COMMAND --help` shows a command's flags and config keys.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable

import ml_collections
from absl import app, flags

from nntrain import api, logs, quiet
from nntrain import config as nn_config
from nntrain.distribute import STRATEGIES, tf_config
from nntrain.errors import NntrainError
from nntrain.run import preemption
from nntrain.tuning import TUNERS

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Experiment name (see experiments/) or path to an experiment .py file, "
                    "optionally :VARIANT (e.g. text_gpt:small).")
flags.DEFINE_string("config", None, "Instead of --experiment: an experiment .py file (optionally :VARIANT) or a "
                    "run's config.json (then --config.KEY=VALUE overrides it).")
flags.DEFINE_string("model_dir", None, "Directory for the run's config, checkpoints, logs and model.")
flags.DEFINE_string("strategy", "auto", "The tf.distribute strategy to run with.")
flags.DEFINE_string("tpu", "", "TPU to use with --strategy=tpu: 'local' on a TPU VM, a TPU name, or grpc://HOST:PORT.")
flags.DEFINE_string("export_dir", None, "Where `export` writes model.keras and saved_model/.")
flags.DEFINE_string("format", "saved_model", "`export`: saved_model (model.keras + serving SavedModel) | tflite "
                    "(also model.tflite).")
flags.DEFINE_string("quantize", "none", "`export --format=tflite`: none | dynamic | float16 | int8 (calibrated on "
                    "training examples).")
flags.DEFINE_string("checkpoint", "final", "Which model `evaluate`/`export` use: final | best | latest.")
flags.DEFINE_boolean("json", False, "Print one JSON object on stdout instead of text.")
flags.DEFINE_integer("steps", 100, "`bench`: training steps timed after the warm-up (rounded up to whole "
                     "executions of steps_per_execution).")
flags.DEFINE_string("worker_hosts", "", "Multi-worker: every worker's HOST:PORT, comma-separated, in order "
                    "(builds TF_CONFIG; implies --strategy=multi_worker).")
flags.DEFINE_integer("task_index", None, "Multi-worker: this worker's index in --worker_hosts (0 is the chief).")
flags.DEFINE_integer("workers", 2, "`launch`: local worker processes to start; `data-service`: tf.data workers.")
flags.DEFINE_integer("port", 5050, "`data-service`: the dispatcher's port (0: any free port).")
flags.DEFINE_string("host", "127.0.0.1", "`data-service`: this machine's address that trainers reach it at (its "
                    "workers tell trainers to fetch there; 127.0.0.1: this machine only).")
flags.DEFINE_float("max_seconds", 0, "`data-service`: stop after this many seconds (0: run until Ctrl-C).")
flags.DEFINE_enum("target", "tpu", ["tpu", "gpu"], "`preflight`: the accelerator to check the experiment for.")
flags.DEFINE_integer("tpu_cores", 8, "`preflight --target=tpu`: TPU cores (replicas); more than 8 is multi-host.")
flags.DEFINE_integer("gpus", 1, "`preflight --target=gpu`: GPUs (replicas).")
flags.DEFINE_string("tuner", "random", "`tune`: the keras-tuner search algorithm.")
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
flags.DEFINE_float("worker_timeout", 120.0, "Multi-worker `train`: seconds to wait for every worker to join (a "
                   "silent peer is lost after TensorFlow's 10 s heartbeat); `train` with data.service: for a silent "
                   "dispatcher; `tune --role`: for a silent worker (or chief) before giving up.")
flags.DEFINE_integer("max_batch_size", None, "`find-batch-size`: the largest batch size to try (default: the "
                     "train split's size).")
flags.DEFINE_integer("batch_steps", 20, "`find-batch-size`: training steps timed at each batch size.")
flags.DEFINE_float("min_lr", 1e-6, "`find-lr`: the learning rate the range test starts at.")
flags.DEFINE_float("max_lr", 10.0, "`find-lr`: the learning rate the range test ends at.")
flags.DEFINE_integer("lr_steps", 100, "`find-lr`: training steps from --min_lr to --max_lr.")
flags.DEFINE_string("prompt", "", "`generate`: the text the sampled text continues.")
flags.DEFINE_integer("max_new_tokens", 200, "`generate`: bytes to sample at most (it stops early at a file's end).")
flags.DEFINE_float("temperature", 1.0, "`generate`: > 0; below 1 samples more likely bytes, above 1 more varied.")
flags.DEFINE_integer("top_k", 0, "`generate`: sample from the K most likely bytes only (0: from all; 1: greedy).")
flags.DEFINE_float("top_p", 1.0, "`generate`: sample from the most likely bytes whose probabilities sum to P "
                   "(nucleus sampling; 1: from all).")
flags.DEFINE_integer("seed", 0, "`generate`: the sampling seed; the same seed gives the same text.")
flags.DEFINE_string("source", None, "`convert`: the data.source to convert, e.g. images:DIR or csv:PATH.")
flags.DEFINE_multi_string("split", [], "`convert`: a split to write (NAME, or NAME=SPEC such as val=train[90%:]); "
                          "repeat for several.")
flags.DEFINE_string("output", None, "`convert`: the new directory for the TFRecord shards and metadata.json.")
flags.DEFINE_integer("shards", 1, "`convert`: TFRecord files per split.")
flags.DEFINE_string("input", None, "`predict`: image files or a folder of them, a CSV file, or a text file (one "
                    "example per line).")

USAGE_ERROR = 2
CHOICES = {"strategy": STRATEGIES, "tuner": TUNERS}  # flags whose values are a registry's names
PATH_FLAGS = ("experiment", "config", "model_dir", "export_dir", "output", "log_dir")
# Keras imports these at start-up when they are installed (keras-tuner[bayesian] brings scikit-learn, find-lr
# matplotlib; Colab has all three) for what no command uses: scikit-learn estimators (keras.wrappers), pandas
# DataFrames given to fit, matplotlib image galleries. Refused to TensorFlow and Keras while a command starts, they
# cost nothing instead of ~1.2 of its ~4 CPU s here; a user's experiment file and find-lr import them as usual.
UNUSED_BY_COMMANDS = ("sklearn", "pandas", "matplotlib")
Config = ml_collections.ConfigDict | None


@dataclasses.dataclass(frozen=True)
class Output:
    """What a command prints: `result` as one JSON document with --json, else `text`; then exits with `code`."""

    result: dict
    text: str = ""
    code: int = 0


@dataclasses.dataclass(frozen=True)
class Command:
    """A command: its function, one line for --help, the flags it reads, whether it takes a config, and whether
    TensorFlow starts before it runs (its start-up lines hidden)."""

    run: Callable[[Config, list[tuple[str, str]]], Output]
    summary: str
    flags: tuple[str, ...] = ()
    takes_config: bool = False
    starts_tensorflow: bool = True


class _UsageError(NntrainError):
    pass


def _require(flag: str) -> str:
    value = getattr(FLAGS, flag)
    if not value:
        raise _UsageError(f"--{flag} is required for `{_command_name()}`")
    return value


def _command_name() -> str:
    return _COMMAND[0] if _COMMAND else "?"


def _config_source() -> str:
    """--experiment or --config (an experiment name, a .py file or a run's config.json); not both."""
    if FLAGS.experiment and FLAGS.config:
        raise _UsageError("give either --experiment or --config, not both")
    if not (FLAGS.experiment or FLAGS.config):
        raise _UsageError(f"--experiment (or --config=PATH.py|RUN/config.json) is required for `{_command_name()}`")
    return FLAGS.experiment or FLAGS.config


def _train(config: Config, overrides: list[tuple[str, str]]) -> Output:
    model_dir = _require("model_dir")
    strategy = tf_config.use_worker_flags(FLAGS.worker_hosts, FLAGS.task_index, FLAGS.strategy)
    tf_config.set_worker_timeout(FLAGS.worker_timeout)
    return Output(api.train(config, model_dir, strategy=strategy, tpu=FLAGS.tpu))


def _config(config: Config, overrides: list[tuple[str, str]]) -> Output:
    settings = nn_config.flat(config)
    return Output(nn_config.to_dict(config), "\n".join(f"{key}={_shown(value)}" for key, value in settings))


def _predict(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.exports import results

    answers = results.predict_files(_require("model_dir"), _require("input"), FLAGS.checkpoint)
    lines = [json.dumps(answer, sort_keys=True) for answer in answers]
    return Output({"predictions": answers}, "\n".join(lines))


def _evaluate(config: Config, overrides: list[tuple[str, str]]) -> Output:
    metrics = api.evaluate(_require("model_dir"), FLAGS.checkpoint)
    return Output(metrics, "\n".join(f"{k}: {v:.6g}" if isinstance(v, float) else f"{k}: {v}"
                                     for k, v in metrics.items()))


def _export(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.exports import artifacts

    result = api.export(_require("model_dir"), _require("export_dir"), FLAGS.checkpoint, FLAGS.format,
                        FLAGS.quantize)
    return Output(result, artifacts.format_table(result))


def _doctor(config: Config, overrides: list[tuple[str, str]]) -> Output:
    checks = api.doctor(FLAGS.model_dir)
    lines = []
    for check in checks:
        fix = f"\n         fix: {check['fix']}" if check["fix"] else ""
        lines.append(f"[{check['status']:>4}] {check['check']}: {check['detail']}{fix}")
    return Output({"checks": checks}, "\n".join(lines), int(any(check["status"] == "fail" for check in checks)))


def _launch(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.distribute import launch

    code = launch.launch(FLAGS.workers, _CHILD_ARGS)
    return Output({"workers": FLAGS.workers, "exit_code": code}, "", code)


def _preflight(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.run import preflight as preflight_checks

    report = api.preflight(config, target=FLAGS.target, tpu_cores=FLAGS.tpu_cores, gpus=FLAGS.gpus, tpu=FLAGS.tpu,
                           model_dir=FLAGS.model_dir)
    return Output(report, preflight_checks.format_report(report), int(not report["ok"]))


def _data_service(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.data import service

    start = time.monotonic()
    service.serve(FLAGS.port, FLAGS.workers, FLAGS.max_seconds, FLAGS.host)
    return Output({"port": FLAGS.port, "host": FLAGS.host, "workers": FLAGS.workers,
                   "seconds": round(time.monotonic() - start, 3)})


def _bench(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain import benchmark

    result = api.bench(config, strategy=FLAGS.strategy, tpu=FLAGS.tpu, steps=FLAGS.steps)
    return Output(result, benchmark.format_table(result))


def _tune(config: Config, overrides: list[tuple[str, str]]) -> Output:
    source = _config_source()
    experiment = config.experiment if source.endswith(".json") else source  # its search space
    result = api.tune(experiment, _require("model_dir"), overrides, strategy=FLAGS.strategy,
                      tpu=FLAGS.tpu, tuner=FLAGS.tuner, max_trials=FLAGS.max_trials, objective=FLAGS.objective,
                      executions_per_trial=FLAGS.executions_per_trial, resume=FLAGS.resume,
                      lr_scaling=FLAGS.lr_scaling, role=FLAGS.role, oracle_address=FLAGS.oracle_address,
                      worker_id=FLAGS.worker_id, worker_timeout=FLAGS.worker_timeout, verbose=True)
    return Output(result)


def _find_batch_size(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.tuning import find_batch_size

    result = api.find_batch_size(config, strategy=FLAGS.strategy, tpu=FLAGS.tpu,
                                 max_batch_size=FLAGS.max_batch_size, num_steps=FLAGS.batch_steps)
    return Output(result, find_batch_size.format_result(result))


def _find_lr(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.tuning import find_lr

    result = api.find_lr(config, _require("model_dir"), strategy=FLAGS.strategy, tpu=FLAGS.tpu,
                         min_lr=FLAGS.min_lr, max_lr=FLAGS.max_lr, num_steps=FLAGS.lr_steps)
    return Output(result, find_lr.format_result(result))


def _generate(config: Config, overrides: list[tuple[str, str]]) -> Output:
    result = api.generate(_require("model_dir"), FLAGS.prompt, max_new_tokens=FLAGS.max_new_tokens,
                          temperature=FLAGS.temperature, top_k=FLAGS.top_k, top_p=FLAGS.top_p, seed=FLAGS.seed,
                          checkpoint=FLAGS.checkpoint)
    return Output(result, result["prompt"] + result["completion"])


def _convert(config: Config, overrides: list[tuple[str, str]]) -> Output:
    from nntrain.data import convert

    config = nn_config.resolve(FLAGS.experiment or FLAGS.config or None, overrides)
    config.data.source = _require("source")
    metadata = convert.convert(config.data, FLAGS.split, _require("output"), FLAGS.shards)
    lines = [f"{name}: {info['examples']} examples in {len(info['files'])} files"
             for name, info in metadata["splits"].items()]
    lines.append(f"wrote {FLAGS.output} (metadata.json): train on it with --config.data.source=tfrecord:{FLAGS.output}")
    return Output(metadata, "\n".join(lines))


_CONFIG = ("experiment", "config")
_STRATEGY = ("strategy", "tpu")
COMMANDS: dict[str, Command] = {
    "train": Command(_train, "train an experiment into --model_dir (re-running resumes)",
                     (*_CONFIG, "model_dir", *_STRATEGY, "worker_hosts", "task_index", "worker_timeout"),
                     takes_config=True),
    "evaluate": Command(_evaluate, "evaluate a trained --model_dir on its eval split", ("model_dir", "checkpoint")),
    "predict": Command(_predict, "a trained --model_dir's answers for --input files: one JSON line per example",
                       ("model_dir", "input", "checkpoint")),
    "config": Command(_config, "print the resolved config: the experiment's values with --config.KEY overrides",
                      _CONFIG, takes_config=True, starts_tensorflow=False),
    "export": Command(_export, "export a trained --model_dir to --export_dir (.keras and SavedModel)",
                      ("model_dir", "export_dir", "checkpoint", "format", "quantize")),
    "doctor": Command(_doctor, "check versions, devices, TPU kernels, gs:// support and --model_dir", ("model_dir",)),
    "launch": Command(_launch, "run a train command as --workers local multi-worker processes: "
                               "launch --workers=2 -- train ...", ("workers",), starts_tensorflow=False),
    "bench": Command(_bench, "steady-state throughput, input-pipeline headroom, FLOPs, MFU and memory",
                     (*_CONFIG, *_STRATEGY, "steps"), takes_config=True),
    "tune": Command(_tune, "hyperparameter search (keras-tuner) over the experiment's search space",
                    (*_CONFIG, "model_dir", *_STRATEGY, "tuner", "max_trials", "objective", "executions_per_trial",
                     "resume", "lr_scaling", "role", "oracle_address", "worker_id", "worker_timeout"),
                    takes_config=True),
    "find-batch-size": Command(_find_batch_size, "examples/s of doubling batch sizes; the largest that still "
                               "speeds training", (*_CONFIG, *_STRATEGY, "max_batch_size", "batch_steps"),
                               takes_config=True),
    "find-lr": Command(_find_lr, "learning-rate range test: lr_range.png and lr_range.csv in --model_dir",
                       (*_CONFIG, "model_dir", *_STRATEGY, "min_lr", "max_lr", "lr_steps"), takes_config=True),
    "preflight": Command(_preflight, "on CPU, check an experiment for --target=tpu|gpu: XLA, shapes, ops, batch, "
                         "paths, memory", (*_CONFIG, "target", "tpu_cores", "gpus", "tpu", "model_dir"),
                         takes_config=True),
    "data-service": Command(_data_service, "a tf.data service (dispatcher + --workers) on --port, every interface",
                            ("port", "host", "workers", "max_seconds")),
    "generate": Command(_generate, "sample text from a trained language model (text_gpt) after --prompt",
                        ("model_dir", "checkpoint", "prompt", "max_new_tokens", "temperature", "top_k", "top_p",
                         "seed")),
    "convert": Command(_convert, "write --split(s) of --source as --shards TFRecord files + metadata.json in "
                       "--output", ("source", "split", "output", "shards", *_CONFIG)),
}
_COMMAND: list[str] = []
_OVERRIDES: list[tuple[str, str]] = []
_CHILD_ARGS: list[str] = []  # after `--`: the command `launch` runs in each worker
_PROCESS = [False]  # run() was called as the process's entry point (no argv given)


def _fail(message: str, code: int = USAGE_ERROR, at_once: bool = False) -> None:
    """Prints the one line (and the JSON document) and exits `code`; `at_once`: as the `nntrain` process, without
    Python's or TensorFlow's shutdown (`_end_process`), for errors that say so (`exit_at_once`: a preempted run,
    a lost peer)."""
    print(f"nntrain: error: {message}", file=sys.stderr)
    if FLAGS.is_parsed() and FLAGS.json:
        print(json.dumps({"error": message, "exit_code": code}))
    if at_once:
        _end_process(code)
    sys.exit(code)


EXAMPLES = """Examples:
  nntrain train --experiment=mnist_mlp --model_dir=runs/mnist_mlp --config.train.epochs=3
  nntrain train --config=my_experiment.py --model_dir=runs/mine
  nntrain train --config=runs/mnist_mlp/config.json --model_dir=runs/again --config.train.epochs=10
  nntrain evaluate --model_dir=runs/mnist_mlp --json
  nntrain export --model_dir=runs/mnist_mlp --export_dir=exports/mnist_mlp
  nntrain launch --workers=2 -- train --experiment=mnist_mlp --model_dir=runs/mnist_mlp_mw
  nntrain preflight --experiment=cifar10_resnet --target=tpu --model_dir=gs://BUCKET/runs/cifar10
  nntrain tune --experiment=mnist_mlp --model_dir=runs/tune_mnist --tuner=random --max_trials=10
  nntrain predict --model_dir=runs/mnist_mlp --input=digits/
  nntrain config --experiment=mnist_mlp --config.train.epochs=3
  nntrain train --experiment=mnist_mlp --help      # the flags, and every config key with mnist_mlp's value

Flags can also come from a file: --flagfile=FILE. absl's flags (--log_dir, --alsologtostderr, ...): --helpfull.
--verbosity=-1 (-v -1) keeps nntrain's log lines to warnings. nntrain --version: the versions in use."""


def usage() -> str:
    """`nntrain --help`: the commands, one line each, and examples."""
    width = max(map(len, COMMANDS)) + 2
    commands = "\n".join(f"  {name:<{width}}{command.summary}" for name, command in COMMANDS.items())
    return f"{__doc__.strip()}\n\nCommands:\n{commands}\n\n{EXAMPLES}"


def command_help(name: str, config: Config = None) -> str:
    """`nntrain NAME --help`: the command's flags and, if it takes a config, every config key with its default or,
    given the `config` of --experiment/--config, its value there."""
    command = COMMANDS[name]
    lines = [f"nntrain {name}: {command.summary}", "", "Flags:"]
    for flag in (*command.flags, "json"):
        default = FLAGS[flag].default
        lines.append(f"  --{flag}={'' if default is None else _shown(default)}\n      {FLAGS[flag].help}")
        if flag in CHOICES:
            lines[-1] += f" One of: {' | '.join(CHOICES[flag].names())}."
    if command.takes_config and config is not None:
        described = {key: help_text for key, _, help_text in nn_config.describe()}
        lines += ["", f"Config of {config.get('experiment') or 'this config'} (--config.KEY=VALUE):"]
        lines += [f"  {key}={_shown(value)}" + (f"\n      {described[key]}" if described.get(key) else "")
                  for key, value in nn_config.flat(config)]
    elif command.takes_config:
        lines += ["", "Config (--config.KEY=VALUE; the experiment sets its own values of some: add "
                      "--experiment=NAME to see them):"]
        lines += [f"  {key}={_shown(default)}\n      {help_text}" for key, default, help_text in nn_config.describe()]
    lines += ["", "absl's flags (--flagfile, --log_dir, --alsologtostderr, --verbosity, ...): --helpfull"]
    return "\n".join(lines)


def _shown(value: object) -> str:
    return ",".join(map(str, value)) if isinstance(value, tuple) else str(value)


def _parse_flags(argv: list[str]) -> list[str]:
    """absl parsing that keeps `--config.*` overrides for the config and reports bad flags in one line."""
    try:
        rest = FLAGS(argv, known_only=True)
    except flags.Error as e:
        _fail(f"{e}; see `nntrain --help`")
    except UnicodeDecodeError as e:  # absl reads flag files as UTF-8
        files = ", ".join(arg for arg in argv if arg.startswith("--flagfile"))
        _fail(f"{files}: not UTF-8 text ({e}): save it as UTF-8")
    for flag in PATH_FLAGS:  # `--model_dir=~/runs`: the shell expands no ~ after `=`
        if (FLAGS[flag].value or "").startswith("~"):
            FLAGS[flag].value = os.path.expanduser(FLAGS[flag].value)
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


def _check_flags(name: str) -> None:
    """Refuses a flag of another command (`train --seed=7`) and --config.* overrides a command does not apply."""
    command = COMMANDS[name]
    for flag in FLAGS.get_flags_for_module(sys.modules[__name__]):
        if flag.present and flag.name not in (*command.flags, "json"):
            owners = [other for other, entry in COMMANDS.items() if flag.name in entry.flags]
            keys = [key for key, _, _ in nn_config.describe() if key.rsplit(".", 1)[-1] == flag.name]
            hint = f"; the config's is --config.{keys[0]}=VALUE" if keys and command.takes_config else ""
            _fail(f"--{flag.name} is a flag of `{'`, `'.join(owners)}`, not of `{name}`{hint} (see "
                  f"`nntrain {name} --help`)")
    if _OVERRIDES and not (command.takes_config or "config" in command.flags):
        key, value = _OVERRIDES[0]
        _fail(f"`{name}` uses the run's saved config.json and applies no overrides: leave out "
              f"--config.{key}={value}")


def _main(argv: list[str]) -> None:
    if len(argv) > 2 and argv[1] in COMMANDS:
        _fail(f"unexpected argument '{argv[2]}' after `{argv[1]}`: flags are written --NAME=VALUE (see "
              f"`nntrain {argv[1]} --help`)")
    if len(argv) != 2 or argv[1] not in COMMANDS:
        given = f"unknown command '{argv[1]}'" if len(argv) > 1 else "no command given"
        _fail(f"{given}: use one of {', '.join(COMMANDS)} (see `nntrain --help`)")
    _COMMAND[:] = [argv[1]]
    command = COMMANDS[argv[1]]
    _check_flags(argv[1])
    if not FLAGS["verbosity"].present:
        logs.hide_tensorflow_info()  # TF's Python INFO lines; --verbosity=0 brings them back
    try:
        logs.use_absl_flags()
        # The config is checked before TensorFlow is imported: a typo costs well under a second. An experiment
        # file may import keras, so TensorFlow's start-up lines are hidden from its loading on; `config` only
        # prints, the launcher only starts processes. A train answers SIGTERM/SIGINT from here on: at once during
        # start-up, at a step with a checkpoint once training began (run/preemption.py).
        with logs.stdout_to_stderr(FLAGS.json), \
                (preemption.watch(at_once=True) if argv[1] == "train" else contextlib.nullcontext()):
            with quiet.tensorflow_start_up_hidden(start=command.starts_tensorflow, unused=UNUSED_BY_COMMANDS):
                config = nn_config.resolve(_config_source(), _OVERRIDES) if command.takes_config else None
            for flag in (flag for flag in command.flags if flag in CHOICES):  # after the config: its file may
                CHOICES[flag].get(getattr(FLAGS, flag))  # register one
            output = command.run(config, list(_OVERRIDES))
    except NntrainError as e:
        _fail(str(e), getattr(e, "exit_code", USAGE_ERROR), getattr(e, "exit_at_once", False))
    except KeyboardInterrupt:
        _fail("interrupted; run the same command again to resume", 130)
    if FLAGS.json:
        print(json.dumps(output.result, sort_keys=True))
    elif output.text:
        print(output.text)
    if argv[1] == "train":  # every file is committed: TensorFlow's teardown is not waited for
        _end_process(output.code)
    if output.code:
        sys.exit(output.code)


def _end_process(code: int) -> None:
    """As the `nntrain` process (not a caller of `run(argv)`): flushes the output and ends at once. Finalizing
    TensorFlow's threads and objects took 17-18 s after a run's last save on this busy 2-core machine."""
    if not _PROCESS[0]:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    logging.shutdown()
    os._exit(code)


def _help(argv: list[str]) -> str:
    """`nntrain [COMMAND] --help`, with the values of the --experiment or --config it names, if any."""
    if len(argv) < 2 or argv[1] not in COMMANDS:
        return usage()
    named = {}
    for i, arg in enumerate(argv[2:], 2):
        flag, equals, value = arg.partition("=")
        if flag in ("--experiment", "--config"):
            named[flag] = value if equals else (argv[i + 1] if i + 1 < len(argv) else "")
    if not named or not COMMANDS[argv[1]].takes_config:
        return command_help(argv[1])
    try:
        overrides = [nn_config.parse_override(arg) for arg in argv[2:] if arg.startswith("--config.")]
        with quiet.tensorflow_start_up_hidden(start=False, unused=UNUSED_BY_COMMANDS):
            config = nn_config.resolve(named.get("--experiment") or named["--config"], overrides)
    except NntrainError as e:
        _fail(str(e))
    return command_help(argv[1], config)


def version() -> str:
    """`nntrain --version`: nntrain's version and those of the stack it runs on (without importing it)."""
    from importlib import metadata

    stack = []
    for package in ("tensorflow", "keras"):
        try:
            stack.append(f"{package} {metadata.version(package)}")
        except metadata.PackageNotFoundError:
            stack.append(f"{package} not installed")
    return f"nntrain {metadata.version('nntrain')} ({', '.join(stack)}, python {sys.version.split()[0]})"


def run(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    _PROCESS[0] = argv is None
    argv = list(sys.argv if argv is None else argv)
    if any(arg in ("-h", "--help", "-?") for arg in argv[1:]):
        print(_help(argv))
        sys.exit(0)
    if argv[1:] in (["--version"], ["-V"]):
        print(version())
        sys.exit(0)
    FLAGS.unparse_flags()
    app.run(_main, argv=argv, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
