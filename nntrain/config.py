"""Experiment configs: load by name or path, apply `--config.KEY=VALUE` overrides, validate, save.

This module must not import TensorFlow: config errors are reported before any heavy import.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import json
import math
import os
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import ml_collections
from ml_collections import config_dict

from nntrain.errors import NntrainError
from nntrain.files import write_text_atomic

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"
RESOLVED_CONFIG_NAME = "config.json"

LOSSES = ("mse", "binary_crossentropy", "sparse_categorical_crossentropy")
OPTIMIZERS = ("sgd", "adam", "adamw", "adagrad", "rmsprop")
SCHEDULES = ("constant", "exponential", "polynomial", "linear", "cosine")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
HEADS = ("classification", "binary", "regression")
AUGMENTATIONS = ("none", "flip_crop")


def base_config() -> ml_collections.ConfigDict:
    """Every field an experiment can set, with its default."""
    placeholder = config_dict.placeholder
    return ml_collections.ConfigDict({
        "seed": 0,
        "data": {
            # tfds:NAME | idx:DIR | npz:PATH | tfrecord:GLOB | generated:xor | generated:quadratic | synthetic
            "source": "tfds:mnist",
            "data_dir": placeholder(str),  # TFDS data_dir (None: TFDS default)
            "download": True,  # TFDS: download when the dataset is not prepared
            "train_split": "train",  # TFDS slicing syntax, also for local sources
            "eval_split": "test",
            "num_examples": 1024,  # generated/synthetic sources: examples in each split
            "input_shape": (28, 28, 1),  # synthetic and tfrecord sources: shape of one example
            "num_classes": 10,  # synthetic and tfrecord sources
            "shuffle_buffer": 10_000,
            "cache": True,
            "augment": "none",  # none | flip_crop (images)
            "crop_padding": 4,
            "vocab_size": 20_000,  # text sources: tokenizer vocabulary
            "sequence_length": 200,  # text sources: tokens per example
            "service": "",  # grpc://HOST:PORT of a tf.data service dispatcher that runs the train pipeline
            "check": True,  # one pass over the splits before a run writes anything: NaN/inf, labels, dtypes
        },
        "model": {
            "name": "mlp",
            "head": "classification",  # classification | binary | regression
            "num_outputs": 1,  # regression head units
        },
        "optimizer": {
            "name": "adam",  # sgd | adam | adamw | adagrad | rmsprop
            "learning_rate": 1e-3,
            "momentum": 0.9,  # sgd, rmsprop
            "nesterov": False,  # sgd
            "weight_decay": placeholder(float),  # decoupled weight decay (adamw default 0.004)
            "clip_value": placeholder(float),
            "clip_norm": placeholder(float),
            "global_clip_norm": placeholder(float),
        },
        "schedule": {
            "name": "constant",  # constant | exponential | polynomial | linear | cosine
            "warmup_steps": 0,
            "decay_steps": placeholder(int),  # None: all training steps after warmup
            "decay_rate": 0.1,  # exponential: factor over decay_steps
            "end_learning_rate": 0.0,  # polynomial/linear: final rate; cosine: final rate too
            "power": 1.0,  # polynomial
        },
        "train": {
            "batch_size": 128,  # global batch size (per replica = batch_size / replicas)
            "epochs": 5,
            "steps_per_epoch": placeholder(int),  # None: one pass over the train split
            "eval_steps": placeholder(int),  # None: the whole eval split
            "loss": "sparse_categorical_crossentropy",  # mse | binary_crossentropy | sparse_categorical_crossentropy
            "label_smoothing": 0.0,
            "metrics": ("accuracy",),
            "precision": "auto",  # auto (bf16 TPU, fp16 GPU, fp32 CPU) | float32 | mixed_float16 | mixed_bfloat16
            "steps_per_execution": placeholder(int),  # None: a default that works for the strategy
            "jit_compile": placeholder(bool),  # None: a default that works for the strategy
            "early_stopping_patience": 0,  # epochs without improvement; 0 turns it off
            "monitor": "val_loss",  # metric for the best checkpoint and early stopping
            "tensorboard": True,
        },
    })


def experiment_names() -> list[str]:
    """Names of the experiments shipped in `nntrain/experiments/`."""
    return sorted(p.stem for p in EXPERIMENTS_DIR.glob("*.py") if not p.stem.startswith("_"))


def load_experiment(name_or_path: str) -> ml_collections.ConfigDict:
    """Loads `nntrain/experiments/NAME.py` or a path to an experiment file and returns its config."""
    module, path = experiment_module(name_or_path)
    if not hasattr(module, "get_config"):
        raise NntrainError(f"experiment file '{path}' has no get_config() function")
    try:
        config = module.get_config()
    except Exception as e:  # a broken experiment file is the user's to fix
        raise NntrainError(f"experiment file '{path}': get_config() failed: {type(e).__name__}: {e}") from e
    if not isinstance(config, ml_collections.ConfigDict):
        raise NntrainError(f"experiment file '{path}': get_config() returned {type(config).__name__}, not an "
                           "ml_collections.ConfigDict: start from nntrain.config.base_config()")
    with config.unlocked():
        config.experiment = str(path.stem)
    return config


def experiment_module(name_or_path: str) -> tuple[types.ModuleType, Path]:
    """The executed experiment file (`nntrain/experiments/NAME.py` or a path) and its path."""
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
    """Checks names and ranges; raises NntrainError naming the first bad key."""
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
    require(bool(config.data.source), "data.source", "name a source such as tfds:mnist or idx:DIR")
    require(config.data.service == "" or config.data.service.startswith("grpc://"), "data.service",
            "give the dispatcher as grpc://HOST:PORT (nntrain data-service starts one)")
    choice("data.augment", AUGMENTATIONS)
    for key in ("data.num_examples", "data.num_classes", "data.shuffle_buffer", "data.vocab_size",
                "data.sequence_length"):
        positive(key)
    non_negative("data.crop_padding")
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
    choice("train.precision", PRECISIONS)
    non_negative("train.early_stopping_patience")
    require(bool(config.train.monitor), "train.monitor", "name a metric such as val_loss or val_accuracy")
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


def resolve(name_or_path: str, overrides: Iterable[tuple[str, str]] = ()) -> ml_collections.ConfigDict:
    """Loads an experiment, applies overrides and validates it: the config a run uses."""
    config = load_experiment(name_or_path)
    apply_overrides(config, overrides)
    validate(config)
    return config


def to_dict(config: ml_collections.ConfigDict) -> dict:
    """A JSON-ready dict of the config."""
    return json.loads(config.to_json_best_effort())


def save(config: ml_collections.ConfigDict, model_dir: str) -> str:
    """Writes the resolved config into model_dir atomically and returns its path."""
    path = os.path.join(model_dir, RESOLVED_CONFIG_NAME)
    write_text_atomic(path, json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n")
    return path


def load_saved(model_dir: str) -> ml_collections.ConfigDict:
    """Reads the resolved config a run wrote into model_dir."""
    path = os.path.join(model_dir, RESOLVED_CONFIG_NAME)
    if not os.path.isfile(path):
        raise NntrainError(f"'{model_dir}' holds no nntrain run ({RESOLVED_CONFIG_NAME} missing): "
                           "train into it first with `nntrain train --model_dir=...`")
    with open(path) as f:
        data = json.load(f)
    config = base_config()
    config.update(_with_tuples(data, config))
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
