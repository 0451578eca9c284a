"""Experiment configs: load by name or path, apply `--config.KEY=VALUE` overrides, validate, save.

This module must not import TensorFlow: config errors are reported before any heavy import.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import importlib.util
import json
import math
import os
import re
import traceback
import types
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import ml_collections
from ml_collections import config_dict

from nntrain import registry
from nntrain.errors import NntrainError

LOSSES = ("mse", "binary_crossentropy", "sparse_categorical_crossentropy")
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("constant", "exponential", "polynomial", "linear", "cosine")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
HEADS = ("classification", "binary", "regression")
AUGMENTATIONS = ("none", "flip_crop", "random_resized_crop")
MONITOR_MODES = ("auto", "min", "max")


@dataclasses.dataclass(frozen=True)
class Field:
    """One config field: its default and the one line `nntrain COMMAND --help` shows for it."""

    default: Any
    help: str


def _experiments_dir() -> Path:
    """experiments/ of the repository, installed as the package nntrain.experiments (setup.cfg package_dir): found
    through the import system, so the editable install and the wheel both resolve it."""
    spec = importlib.util.find_spec("nntrain.experiments")
    if spec is None:  # an editable install made before experiments/ moved to the top of the repository
        raise ImportError("nntrain.experiments is not installed: reinstall nntrain (make install, or pip install -e .)")
    return Path(spec.submodule_search_locations[0])


EXPERIMENTS_DIR = _experiments_dir()


PATH_SOURCES = ("idx", "npz", "images", "csv", "tfrecord", "text")  # data.source kinds whose argument is a path


def _fields() -> dict[str, dict[str, Field] | Field]:
    """Every field an experiment can set, with its default and description (the one source of both)."""
    placeholder = config_dict.placeholder
    return {
        "seed": Field(0, "seeds Python, NumPy, TensorFlow and Keras before anything random is built"),
        "experiment": Field("", "the experiment file this config came from (set when it is loaded)"),
        "data": {
            "source": Field("tfds:mnist", "tfds:NAME | idx:DIR | npz:PATH | images:DIR | csv:PATH | "
                                          "tfrecord:GLOB|DIR | text:GLOB | generated:xor | generated:quadratic | "
                                          "synthetic | a registered SCHEME:ARG"),
            "data_dir": Field(placeholder(str), "TFDS data_dir (None: TFDS default)"),
            "download": Field(True, "TFDS: download when the dataset is not prepared"),
            "train_split": Field("train", "TFDS slicing syntax, also for local sources, e.g. test[:8000]"),
            "eval_split": Field("test", "the split evaluated after each epoch, same syntax"),
            "num_examples": Field(1024, "generated/synthetic sources: examples in each split"),
            "input_shape": Field((28, 28, 1), "synthetic and tfrecord sources: shape of one example"),
            "num_classes": Field(10, "synthetic and tfrecord sources: number of classes"),
            "shuffle_buffer": Field(10_000, "examples in the shuffle buffer"),
            "cache": Field("auto", "auto (splits whose decoded size fits cache_budget_mb; never a streaming source) | "
                                   "true | false"),
            "cache_budget_mb": Field(2048, "data.cache=auto: the memory the cached splits of a run may take"),
            "augment": Field("none", "none | flip_crop | random_resized_crop (images; eval then sees a center crop)"),
            "crop_padding": Field(4, "flip_crop: pixels of padding before the random crop"),
            "vocab_size": Field(20_000, "text sources: tokenizer vocabulary"),
            "sequence_length": Field(200, "text sources: tokens per example"),
            "service": Field("", "grpc://HOST:PORT of a tf.data service dispatcher that runs the train pipeline"),
            "check": Field(True, "one pass over the splits before a run writes anything: NaN/inf, labels, dtypes"),
            "one_hot_labels": Field(False, "classes as one-hot vectors: train.label_smoothing needs them"),
            "image_size": Field((), "images: (height, width) every image is resized to; () keeps the first image's"),
            "channels": Field(0, "images: 1 (grey), 3 (RGB) or 4 (RGBA); 0 keeps the first image's"),
            "label_column": Field("label", "csv: the column holding the label; every other column is a feature"),
            "record_format": Field("auto", "tfrecord: auto (metadata.json's, else vector) | vector (float_list x, "
                                           "int64 y) | image (image/encoded bytes, int64 image/class/label)"),
            "feature_key": Field("", "tfrecord: the example's feature name, instead of the format's"),
            "label_key": Field("", "tfrecord: the label's feature name, instead of the format's"),
        },
        "model": {
            "name": Field("mlp", "a registered model builder (mlp | cnn | resnet | transformer | gpt | backbone | "
                                 "...)"),
            "head": Field("classification", "classification | binary | regression"),
            "num_outputs": Field(1, "regression head units"),
            "init_from": Field("", "RUN_DIR | FILE.keras: start from the weights of its layers of the same name and "
                                   "shape (a head for other classes stays new); a resumed run never reads it"),
        },
        "optimizer": {
            "name": Field("adam", "sgd | adam | adamw | adagrad | rmsprop"),
            "learning_rate": Field(1e-3, "base learning rate (peak of the schedule)"),
            "momentum": Field(0.9, "sgd, rmsprop: momentum"),
            "nesterov": Field(False, "sgd: Nesterov momentum"),
            "weight_decay": Field(placeholder(float), "decoupled weight decay (None: the optimizer's; adamw 0.004)"),
            "clip_value": Field(placeholder(float), "clip each gradient element to [-v, v]"),
            "clip_norm": Field(placeholder(float), "clip each gradient to this norm"),
            "global_clip_norm": Field(placeholder(float), "clip all gradients together to this global norm"),
            "gradient_accumulation_steps": Field(placeholder(int), "average the gradients of this many steps (>= 2) "
                                                 "into one update; schedules count updates (None: off)"),
            "use_ema": Field(False, "keep an exponential moving average of the weights; evaluation, checkpoints "
                                    "and the saved model use it"),
            "ema_momentum": Field(0.99, "use_ema: weight of the old average at each update"),
        },
        "schedule": {
            "name": Field("constant", "constant | exponential | polynomial | linear | cosine"),
            "warmup_steps": Field(0, "optimizer steps of linear warmup from 0 to the learning rate"),
            "decay_steps": Field(placeholder(int), "None: all training steps after warmup"),
            "decay_rate": Field(0.1, "exponential: factor over decay_steps"),
            "end_learning_rate": Field(0.0, "polynomial, linear, cosine: the final rate"),
            "power": Field(1.0, "polynomial: exponent of the decay"),
        },
        "train": {
            "batch_size": Field(128, "global batch size (per replica = batch_size / replicas)"),
            "epochs": Field(5, "epochs to train (re-running a finished run does nothing)"),
            "steps_per_epoch": Field(placeholder(int), "None: one pass over the train split"),
            "eval_steps": Field(placeholder(int), "None: the whole eval split"),
            "loss": Field("sparse_categorical_crossentropy",
                          "mse | binary_crossentropy | sparse_categorical_crossentropy"),
            "label_smoothing": Field(0.0, "classification losses: label smoothing in [0, 1)"),
            "metrics": Field(("accuracy",), "Keras metric names reported each epoch"),
            "precision": Field("auto", "auto (bf16 TPU, fp16 GPU, fp32 CPU) | float32 | mixed_float16 | "
                                       "mixed_bfloat16"),
            "steps_per_execution": Field(placeholder(int), "None: a default that works for the strategy"),
            "jit_compile": Field(placeholder(bool), "None: a default that works for the strategy"),
            "early_stopping_patience": Field(0, "epochs without improvement before stopping; 0 turns it off"),
            "monitor": Field("val_loss", "metric for the best checkpoint, early stopping and the tuner's objective"),
            "monitor_mode": Field("auto", "auto (a loss goes down, a Keras metric its own direction) | min | max"),
            "checkpoint_every_steps": Field(0, "also checkpoint every N optimizer steps (0: at epoch ends only)"),
            "keep_checkpoints": Field(1, "step checkpoints kept (best.keras is kept besides)"),
            "deterministic": Field(False, "TensorFlow op determinism (tf.config.experimental.enable_op_determinism; "
                                          "slower)"),
            "tensorboard": Field(True, "write TensorBoard logs into MODEL_DIR/logs"),
        },
        "finetune": {  # two-phase fine-tuning of a backbone (model.name=backbone, or any model: all but its head)
            "freeze_epochs": Field(0, "epochs that train only the head, the backbone frozen (BatchNormalization in "
                                      "inference mode); 0: no frozen phase"),
            "unfreeze_layers": Field(0, "then train the backbone's top N layers (0: all); BatchNormalization stays "
                                        "frozen whenever freeze_epochs or this is set"),
            "backbone_lr_scale": Field(1.0, "the backbone's learning rate as a fraction of the schedule's"),
        },
        "prune": {  # magnitude pruning of Dense/Conv kernels (Zhu & Gupta 2017); see nntrain/run/prune.py
            "target_sparsity": Field(0.0, "fraction of each kernel set to zero by end_step; 0 turns pruning off"),
            "initial_sparsity": Field(0.0, "sparsity at begin_step"),
            "begin_step": Field(0, "optimizer step of the first mask update"),
            "end_step": Field(placeholder(int), "step the target is reached (None: 3/4 of training)"),
            "frequency": Field(100, "optimizer steps between mask updates"),
            "power": Field(3.0, "exponent of the polynomial sparsity schedule (3 in the paper)"),
        },
    }


def _defaults(fields: dict) -> dict:
    return {key: _defaults(value) if isinstance(value, dict) else getattr(value, "default", value)
            for key, value in fields.items()}


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment can set, with its default; locked, so a misspelt key is an error.

    `model` stays open: each builder reads its own fields (models/fields.py checks them).
    """
    config = ml_collections.ConfigDict(_defaults(_fields()))
    config.lock()
    config.model.unlock()
    return config


def describe() -> list[tuple[str, Any, str]]:
    """(dotted key, default, description) of every base config field, for `--help`."""
    def walk(fields: dict, prefix: str) -> Iterator[tuple[str, Any, str]]:
        for key, value in fields.items():
            if isinstance(value, dict):
                yield from walk(value, f"{prefix}{key}.")
            elif isinstance(value, Field):
                default = value.default
                yield f"{prefix}{key}", None if isinstance(default, config_dict.FieldReference) else default, value.help
            else:  # a field added without a description
                yield f"{prefix}{key}", value, ""
    return list(walk(_fields(), ""))


def experiment_names() -> list[str]:
    """Names of the experiments shipped in `experiments/`."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def split_variant(name_or_path: str) -> tuple[str, str | None]:
    """`NAME:VARIANT` or `FILE.py:VARIANT` (the ml_collections convention) -> (NAME, VARIANT); no colon: None."""
    name, sep, variant = name_or_path.rpartition(":")
    return (name, variant) if sep and name and "/" not in variant else (name_or_path, None)


def load_experiment(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads `experiments/NAME.py` or a path to an experiment file, either optionally `:VARIANT`, and
    returns its config: `get_config(VARIANT)`, or `get_config()` without a variant. A file with variants lists
    them in `VARIANTS`."""
    module, path = experiment_module(name_or_path)
    variant = split_variant(name_or_path)[1]
    if not hasattr(module, "get_config"):
        raise NntrainError(f"experiment file '{path}' has no get_config() function")
    known = tuple(getattr(module, "VARIANTS", ()))
    if variant is not None and variant not in known:
        listed = f"its variants are {', '.join(known)} (e.g. {path.stem}:{known[-1]})" if known else \
            f"it has none: give '{path.stem}' alone"
        raise NntrainError(f"experiment '{path.stem}' has no variant '{variant}': {listed}")
    try:
        config = module.get_config() if variant is None else module.get_config(variant)
    except Exception as e:  # a broken experiment file is the user's to fix
        misspelt = _misspelt_key(path, e) if isinstance(e, (AttributeError, KeyError)) else None
        if misspelt:  # a locked base section refused a misspelt key
            raise NntrainError(f"experiment file '{path}'{misspelt}") from e
        raise NntrainError(f"experiment file '{path}': get_config() failed: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise NntrainError(f"experiment file '{path}': get_config() returned {type(config).__name__}, not an "
                           "ml_collections.ConfigDict: start from nntrain.config.base_config()")
    with config.unlocked():
        config.experiment = path.stem if variant is None else f"{path.stem}:{variant}"
    registry.add_experiment_hooks(module, config)  # its get_model() and get_callbacks(), if it has them
    return config


def _misspelt_key(path: Path, error: BaseException) -> str | None:
    """`, line N: unknown config key 'a.b': did you mean ...` for the line of `path` that raised `error`, or None
    when that line sets no unknown config key (then the error is not a misspelling)."""
    frames = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve() == path.resolve()]
    line = frames[-1].line.strip() if frames else ""
    where = f", line {frames[-1].lineno} ({line})" if frames else ""
    key = re.search(r"['\"](\w+)['\"]", str(error))
    chain = re.search(rf"\bconfig((?:\.\w+)*?\.{key.group(1)})\b", line) if key else None
    if chain:
        try:
            _lookup_parent(base_config(), chain.group(1)[1:])
        except NntrainError as e:
            return f"{where}: {e}"
    return None


def experiment_module(name_or_path: str) -> tuple[types.ModuleType, Path]:
    """The executed experiment file (`experiments/NAME.py` or a path; a `:VARIANT` is ignored) and its
    path."""
    name_or_path = split_variant(name_or_path)[0]
    if not name_or_path:
        raise NntrainError("no experiment given: pass --experiment=NAME or a path "
                           f"(available: {', '.join(experiment_names())})")
    path = Path(name_or_path)
    if path.suffix != ".py":
        path = EXPERIMENTS_DIR / f"{name_or_path}.py"
        if not path.is_file():
            close = difflib.get_close_matches(name_or_path, experiment_names(), n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise NntrainError(f"unknown experiment '{name_or_path}': {hint}"
                               f"available: {', '.join(experiment_names())}, or a path to a .py file")
    elif not path.is_file():
        raise NntrainError(f"experiment file '{name_or_path}' does not exist")
    spec = importlib.util.spec_from_file_location(f"nntrain_experiment_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # a broken experiment file is the user's to fix
        raise NntrainError(f"experiment file '{path}' failed to load: {type(e).__name__}: {e}") from e
    return module, path


def parse_override(arg: str) -> tuple[str, str]:
    """Splits `--config.a.b=value` into (`a.b`, `value`)."""
    body = arg[len("--config."):]
    key, sep, value = body.partition("=")
    if not sep or not key:
        raise NntrainError(f"bad override '{arg}': write it as --config.KEY=VALUE, e.g. --config.train.batch_size=256")
    return key, value


def apply_overrides(config: ml_collections.ConfigDict, overrides: Iterable[tuple[str, str]]) -> None:
    """Sets each dotted key to its value, parsed to the type of the field it replaces."""
    for key, text in overrides:
        parent, leaf = _lookup_parent(config, key)
        current = parent[leaf]
        field_type = _field_type(parent, leaf)
        value = _parse_value(key, text, field_type, current)
        try:
            parent[leaf] = value
        except TypeError as e:
            raise NntrainError(f"--config.{key}={text}: {_type_name(field_type)} expected") from e


def _lookup_parent(config: ml_collections.ConfigDict, key: str) -> tuple[ml_collections.ConfigDict, str]:
    node = config
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            where = ".".join(parts[:depth]) or "config"
            options = sorted(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            close = difflib.get_close_matches(part, options, n=1)
            hint = f"did you mean '{'.'.join(parts[:depth] + [close[0]])}'? " if close else ""
            raise NntrainError(f"unknown config key '{key}': {hint}{where} has: {', '.join(options)}")
        if depth < len(parts) - 1:
            node = node[part]
    if isinstance(node[parts[-1]], ml_collections.ConfigDict):
        raise NntrainError(f"config key '{key}' is a section; set one of its fields: "
                           f"{', '.join(sorted(node[parts[-1]].keys()))}")
    return node, parts[-1]


def _field_type(parent: ml_collections.ConfigDict, leaf: str) -> type:
    ref = parent.get_ref(leaf)
    return ref.get_type()


def _type_name(field_type: type) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string",
            tuple: "a comma-separated list", list: "a comma-separated list"}.get(field_type, field_type.__name__)


def _parse_value(key: str, text: str, field_type: type, current: Any) -> Any:
    if text.lower() in ("none", "null"):
        if current is None or field_type is type(None):
            return None
        if field_type is str:  # a word such as data.augment=none or model.backbone_weights=none
            return text
        raise NntrainError(f"--config.{key}: None is not allowed here, {_type_name(field_type)} expected")
    try:
        if field_type is bool:
            if text.lower() in ("true", "1", "yes"):
                return True
            if text.lower() in ("false", "0", "no"):
                return False
            raise ValueError(text)
        if field_type is int:
            value = ast.literal_eval(text)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(text)
            return value
        if field_type is float:
            return float(text)
        if field_type in (tuple, list):
            text = text.strip().strip("()[]")
            items = [item.strip() for item in text.split(",") if item.strip()]
            return field_type(_literal_or_str(item) for item in items)
        if field_type is str:
            return text
    except (ValueError, SyntaxError) as e:
        raise NntrainError(f"--config.{key}={text}: {_type_name(field_type)} expected") from e
    return _literal_or_str(text)


def _literal_or_str(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def validate(config: ml_collections.ConfigDict) -> None:
    """The one check of a config: names and ranges, then the monitor's direction (which asks Keras, so it comes
    last: a bad value fails before TensorFlow is imported); raises NntrainError naming the first bad key.

    A config passes once per process: the CLI's `resolve` checks it and the api's entry points find it checked.
    """
    text = config.to_json_best_effort(sort_keys=True)
    if text not in _VALID:
        _check_values(config)
        monitor_mode(config.train.monitor, config.train.monitor_mode)
        if len(_VALID) >= _REMEMBERED:  # a long search validates a config per trial
            _VALID.clear()
        _VALID.add(text)


_VALID: set[str] = set()  # the configs validate() passed, as JSON
_REMEMBERED = 64


def monitor_mode(monitor: str, mode: str = "auto") -> str:
    """"max" if a higher `monitor` is better, else "min": the one rule of best checkpoint, early stopping and tuner.

    Keras's own rule: `mode` min or max wins; with auto, a loss is minimised and a Keras metric goes the
    direction it declares (r2_score, accuracy and auc up; mse and mae down).
    """
    if mode not in MONITOR_MODES:
        raise NntrainError(f"train.monitor_mode={mode!r} is not allowed: use one of {', '.join(MONITOR_MODES)}")
    if mode != "auto":
        return mode
    name = monitor.removeprefix("val_")
    if name == "loss" or name.endswith("_loss"):
        return "min"
    from nntrain.compat import keras_metrics  # Keras: only for a metric's own direction

    direction = keras_metrics.direction(name)
    if direction is None:
        raise NntrainError(f"cannot tell whether a higher '{monitor}' is better: set train.monitor_mode=max "
                           "or train.monitor_mode=min")
    return "max" if direction == "up" else "min"


def _check_values(config: ml_collections.ConfigDict) -> None:
    """Names and ranges of every field (no TensorFlow)."""
    def require(ok: bool, key: str, allowed: str) -> None:
        if not ok:
            raise NntrainError(f"config.{key}={_get(config, key)!r} is not allowed: {allowed}")

    def choice(key: str, options: Iterable[str]) -> None:
        options = tuple(options)
        require(_get(config, key) in options, key, f"use one of {', '.join(options)}")

    def positive(key: str, optional: bool = False) -> None:
        value = _get(config, key)
        if optional and value is None:
            return
        require(value is not None and value > 0, key, "it must be > 0")

    def non_negative(key: str) -> None:
        require(_get(config, key) >= 0, key, "it must be >= 0")

    for key in _float_keys(config):
        require(math.isfinite(_get(config, key)), key, "it must be a finite number")
    require(0 <= config.seed < 2**32, "seed", "it must be in [0, 2**32) (NumPy's seed range)")
    require(bool(config.data.source), "data.source", "name a source such as tfds:mnist or idx:DIR")
    require(config.data.service == "" or config.data.service.startswith("grpc://"), "data.service",
            "give the dispatcher as grpc://HOST:PORT (nntrain data-service starts one)")
    choice("data.augment", AUGMENTATIONS)
    choice("data.cache", ("auto", "true", "false"))
    positive("data.cache_budget_mb")
    for key in ("data.num_examples", "data.num_classes", "data.shuffle_buffer", "data.vocab_size",
                "data.sequence_length"):
        positive(key)
    non_negative("data.crop_padding")
    require(len(config.data.image_size) in (0, 2) and all(isinstance(d, int) and d > 0
                                                          for d in config.data.image_size),
            "data.image_size", "give height,width such as 224,224 (or nothing to keep the stored size)")
    require(config.data.channels in (0, 1, 3, 4), "data.channels", "use 1, 3, 4 or 0 (as stored)")
    require(bool(config.data.label_column), "data.label_column", "name the CSV column holding the label")
    choice("data.record_format", ("auto", "vector", "image"))
    require(all(isinstance(d, int) and d > 0 for d in config.data.input_shape), "data.input_shape",
            "a list of positive integers such as 28,28,1")
    choice("model.head", HEADS)
    positive("model.num_outputs")
    choice("optimizer.name", OPTIMIZERS)
    positive("optimizer.learning_rate")
    non_negative("optimizer.momentum")
    for key in ("optimizer.clip_value", "optimizer.clip_norm", "optimizer.global_clip_norm"):
        positive(key, optional=True)
    clipping = [k for k in ("clip_value", "clip_norm", "global_clip_norm") if config.optimizer[k] is not None]
    require(len(clipping) <= 1, f"optimizer.{clipping[-1]}" if clipping else "optimizer.clip_norm",
            f"{' and '.join(clipping)} are all set; Keras clips one way: keep one of them")
    if config.optimizer.weight_decay is not None:
        non_negative("optimizer.weight_decay")
    accumulation = config.optimizer.gradient_accumulation_steps
    require(accumulation is None or accumulation >= 2, "optimizer.gradient_accumulation_steps",
            "it must be >= 2, or None for no accumulation")
    require(0.0 <= config.optimizer.ema_momentum < 1.0, "optimizer.ema_momentum", "it must be in [0, 1)")
    choice("schedule.name", SCHEDULES)
    non_negative("schedule.warmup_steps")
    positive("schedule.decay_steps", optional=True)
    positive("schedule.decay_rate")
    non_negative("schedule.end_learning_rate")
    positive("schedule.power")
    positive("train.batch_size")
    positive("train.epochs")
    positive("train.steps_per_epoch", optional=True)
    positive("train.eval_steps", optional=True)
    positive("train.steps_per_execution", optional=True)
    choice("train.loss", LOSSES)
    require(0.0 <= config.train.label_smoothing < 1.0, "train.label_smoothing", "it must be in [0, 1)")
    require(not config.train.label_smoothing or config.train.loss != "sparse_categorical_crossentropy"
            or config.data.one_hot_labels, "train.label_smoothing",
            "Keras smooths one-hot labels only: add --config.data.one_hot_labels=true")
    require(not config.data.one_hot_labels or config.train.loss == "sparse_categorical_crossentropy",
            "data.one_hot_labels", "one-hot labels are for classification (the sparse_categorical_crossentropy "
            "loss): set it to false")
    require(not config.schedule.warmup_steps or config.schedule.name in ("cosine", "constant"),
            "schedule.warmup_steps", "warmup works with schedule.name=cosine or constant (Keras's CosineDecay "
            "warmup); set schedule.warmup_steps=0 or choose one of them")
    choice("train.precision", PRECISIONS)
    non_negative("train.early_stopping_patience")
    require(bool(config.train.monitor), "train.monitor", "name a metric such as val_loss or val_accuracy")
    non_negative("finetune.freeze_epochs")
    non_negative("finetune.unfreeze_layers")
    positive("finetune.backbone_lr_scale")
    require(0.0 <= config.prune.target_sparsity < 1.0, "prune.target_sparsity", "it must be in [0, 1), e.g. 0.8")
    require(0.0 <= config.prune.initial_sparsity <= config.prune.target_sparsity, "prune.initial_sparsity",
            "it must be in [0, prune.target_sparsity]")
    non_negative("prune.begin_step")
    require(config.prune.end_step is None or config.prune.end_step > config.prune.begin_step, "prune.end_step",
            "it must be > prune.begin_step (or None: 3/4 of training)")
    positive("prune.frequency")
    positive("prune.power")
    choice("train.monitor_mode", MONITOR_MODES)
    non_negative("train.checkpoint_every_steps")
    positive("train.keep_checkpoints")
    loss_head = {"mse": "regression", "binary_crossentropy": "binary",
                 "sparse_categorical_crossentropy": "classification"}
    require(loss_head[config.train.loss] == config.model.head, "model.head",
            f"loss {config.train.loss} needs head '{loss_head[config.train.loss]}'")


def _float_keys(config: ml_collections.ConfigDict, prefix: str = "") -> list[str]:
    """Dotted keys of every float field (inf passes `> 0`, NaN fails every comparison silently)."""
    keys = []
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict):
            keys += _float_keys(value, f"{prefix}{key}.")
        elif isinstance(value, float):
            keys.append(f"{prefix}{key}")
    return keys


def _get(config: ml_collections.ConfigDict, dotted: str) -> Any:
    node = config
    for part in dotted.split("."):
        node = node[part]
    return node


def resolve(source: str | None, overrides: Iterable[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """The config a run uses: an experiment (name or .py path), a saved run's config.json or (None) the base
    config, with overrides applied, validated."""
    if source is None:
        config = base_config()
    elif "://" not in source and Path(source).expanduser().is_dir():
        saved = Path(source) / "config.json"  # rundir.CONFIG: rundir imports TensorFlow, too slow here
        raise NntrainError(f"'{source}' is a directory: give a run's config file (--config={saved}"
                           f"{'' if saved.expanduser().is_file() else ', which it does not hold'}) or an experiment "
                           "file (.py)")
    else:
        config = load_file(source) if source.endswith(".json") else load_experiment(source)
        if source.endswith(".json"):
            _check_experiment_model(config, source)
    apply_overrides(config, overrides)
    validate(config)
    absolute_paths(config)
    return config


def _check_experiment_model(config: ml_collections.ConfigDict, source: str) -> None:
    """A config.json of a run whose model an experiment file's get_model() built holds no code: name the file."""
    name = config.model.name
    if name.endswith(registry.EXPERIMENT_MODEL) and registry.MODELS.find(name) is None:
        raise NntrainError(f"{source} is the config of a run whose model the get_model() of experiment file "
                           f"'{config.experiment}.py' builds (model.name={name!r}), and a config.json holds no code: "
                           f"pass that file, --config=PATH/{config.experiment}.py (the same --model_dir resumes the "
                           "run)")

def absolute_paths(config: ml_collections.ConfigDict) -> None:
    """Makes the local paths of `data.source` and `data.data_dir` absolute (`~` expanded), so that a run's saved
    config reads the same files from any working directory; URLs (gs://, ram://) and names stay as they are."""
    kind, colon, path = config.data.source.partition(":")
    if colon and kind in PATH_SOURCES and path:
        config.data.source = f"{kind}:{_absolute(path)}"
    if config.data.data_dir:
        config.data.data_dir = _absolute(config.data.data_dir)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def flat(config: ml_collections.ConfigDict) -> list[tuple[str, Any]]:
    """(dotted key, value) of every field of `config`, in its order."""
    def walk(node: ml_collections.ConfigDict, prefix: str) -> Iterator[tuple[str, Any]]:
        for key, value in node.items():
            if isinstance(value, ml_collections.ConfigDict):
                yield from walk(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    return list(walk(config, ""))


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-ready dict of the config."""
    return json.loads(config.to_json_best_effort())


def save(config: ml_collections.ConfigDict, model_dir: str) -> str:
    """Writes the resolved config into model_dir atomically and returns its path."""
    from nntrain import rundir  # TensorFlow: only once a run writes

    path = rundir.join(model_dir, rundir.CONFIG)
    rundir.write_json(path, to_dict(config))
    return path


def load_saved(model_dir: str) -> ml_collections.ConfigDict:
    """Reads the resolved config a run wrote into model_dir."""
    from nntrain import rundir  # TensorFlow: only once a run is read

    data = rundir.read_json(rundir.join(model_dir, rundir.CONFIG))
    if data is None:
        raise NntrainError(f"'{model_dir}' holds no nntrain run ({rundir.CONFIG} missing): "
                           "train into it first with `nntrain train --model_dir=...`")
    return from_dict(data, rundir.join(model_dir, rundir.CONFIG))


def load_file(path: str) -> ml_collections.ConfigDict:
    """A config saved as JSON (a run's config.json) on top of base_config(); unknown keys are errors.

    A local file is read without TensorFlow (config errors come before it is imported); a bucket path (`gs://`)
    through TensorFlow's filesystems.
    """
    try:
        if "://" in path:
            from nntrain import rundir

            data = rundir.read_json(path)
            if data is None:
                raise OSError("no such file")
        else:
            with open(path) as f:
                data = json.load(f)
    except (OSError, ValueError) as e:
        raise NntrainError(f"cannot read config file '{path}': {e}") from e
    return from_dict(data, path)


def from_dict(data: dict, path: str) -> ml_collections.ConfigDict:
    """base_config() updated with a saved config's values; `path` names where they came from in errors."""
    if not isinstance(data, dict):
        raise NntrainError(f"config file '{path}' holds a JSON {type(data).__name__}, not a config (a JSON object of "
                           "sections): give a config.json that `nntrain train` wrote, or an experiment .py file")
    config = base_config()
    try:
        config.update(_with_tuples(data, config))
    except (AttributeError, KeyError, TypeError, ValueError) as e:  # ValueError: a key with a dot
        text = str(e.args[0]) if e.args else str(e)  # a locked ConfigDict's own: the key, every field, a hint
        hint = "".join(f" {line}" for line in text.splitlines() if line.startswith("Did you mean"))
        reason = text.split(" Other fields present")[0].splitlines()[0]
        raise NntrainError(f"config file '{path}' does not fit this nntrain's config: {reason}{hint} "
                           "Fix or remove that key.") from e
    return config


def _with_tuples(data: dict, template: ml_collections.ConfigDict) -> dict:
    """JSON has no tuples: turn lists back into tuples where the template has tuples."""
    out = {}
    for key, value in data.items():
        ref = template.get(key) if isinstance(template, ml_collections.ConfigDict) else None
        if isinstance(value, dict):
            out[key] = ml_collections.ConfigDict(_with_tuples(value, ref if ref is not None else {}))
        elif isinstance(value, list):
            out[key] = tuple(value)
        else:
            out[key] = value
    return out
