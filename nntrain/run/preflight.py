"""`nntrain preflight`: on CPU, check that an experiment will run on a TPU (or GPU) before paying for one.

Builds the experiment's real data pipeline and model at one replica's batch, in the target's precision,
compiles one real train step with XLA and runs it; checks static shapes, the ops in the model, the batch
size for the replica count, file paths as a TPU host sees them, and estimates memory per replica. Each check
is {check, status: pass|warn|fail, detail, fix}. A two-phase fine-tuning run is checked in its second phase.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re

import keras
import ml_collections
import tensorflow as tf
from tensorflow.core.framework import types_pb2

from nntrain.compat import tf_registry
from nntrain.errors import NntrainError
from nntrain.logs import log
from nntrain.run import finetune, trainer
from nntrain.run.guards import Memory, estimate_memory

TARGETS = ("tpu", "gpu")
TARGET_PRECISION = {"tpu": "mixed_bfloat16", "gpu": "mixed_float16"}
# Memory one replica has: a TPU v3 core or v5e chip (v2: 8 GiB, v4: 32 GiB); Colab's T4 GPU.
DEVICE_MEMORY_GIB = {"tpu": 16, "gpu": 15}
DEVICE_NAME = {"tpu": "a TPU v3 core / v5e chip", "gpu": "a T4 GPU"}
TPU_CORES_PER_HOST = 8
TPU_BATCH_MULTIPLE = 8  # a TPU core pads its batch to a multiple of 8
PY_FUNCTION_OPS = {"PyFunc", "PyFuncStateless", "EagerPyFunc"}
MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Check:
    check: str
    status: str  # pass | warn | fail
    detail: str
    fix: str = ""


def run(config: ml_collections.ConfigDict, target: str = "tpu", tpu_cores: int = TPU_CORES_PER_HOST, gpus: int = 1,
        tpu: str = "", model_dir: str | None = None) -> dict:
    """All checks of `config` for `target` on `tpu_cores` TPU cores or `gpus` GPUs, as a JSON-ready report:
    {target, replicas, precision, checks: [{check, status, detail, fix}], memory: {...} or None, ok}."""
    if target not in TARGETS:
        raise NntrainError(f"--target={target}: use one of {', '.join(TARGETS)}")
    replicas = tpu_cores if target == "tpu" else gpus
    if replicas < 1:
        raise NntrainError(f"--{'tpu_cores' if target == 'tpu' else 'gpus'}={replicas}: it must be >= 1")
    checks = [batch_check(config.train.batch_size, replicas, target),
              paths_check(model_dir, config.data, target, tpu, replicas)]
    precision = config.train.precision if config.train.precision != "auto" else TARGET_PRECISION[target]
    model_checks, memory = _model_checks(config, target, replicas, precision)  # api.preflight restores the policy
    checks += model_checks
    return {"target": target, "replicas": replicas, "precision": precision,
            "checks": [dataclasses.asdict(check) for check in checks],
            "memory": {**dataclasses.asdict(memory), "total_bytes": memory.total_bytes} if memory else None,
            "ok": all(check.status != "fail" for check in checks)}


def format_report(report: dict) -> str:
    """The checklist as text: one line per check, its fix below it."""
    lines = [f"preflight for {report['target']} ({report['replicas']} replicas, {report['precision']}):"]
    for check in report["checks"]:
        lines.append(f"[{check['status']:>4}] {check['check']}: {check['detail']}")
        if check["fix"] and check["status"] != "pass":
            lines.append(f"       fix: {check['fix']}")
    failed = sum(check["status"] == "fail" for check in report["checks"])
    lines.append("ready for the accelerator" if not failed else f"{failed} check(s) failed: fix them before you pay")
    return "\n".join(lines)


def _model_checks(config: ml_collections.ConfigDict, target: str, replicas: int,
                  precision: str) -> tuple[list[Check], Memory | None]:
    per_replica = max(1, config.train.batch_size // replicas)
    one_replica = copy.deepcopy(config)
    one_replica.train.batch_size = per_replica
    one_replica.train.precision = precision
    one_replica.train.jit_compile = True
    one_replica.train.steps_per_execution = 1
    log(f"preflight for {target}: building the data and the model at one replica's batch ({per_replica}), "
        f"{precision}")
    try:
        prepared = trainer.prepare(one_replica, tf.distribute.OneDeviceStrategy("/cpu:0"))
    except NntrainError as e:
        return [Check("data and model", "fail", str(e), "fix the config or the data first; see the message")], None
    model = prepared.model
    if config.finetune.freeze_epochs:  # check the step of the fine-tuning phase, which trains (and holds) more
        finetune.unfreeze(model, one_replica)
    element_spec = prepared.data.train.element_spec
    checks = [shapes_check(element_spec, model, target), graph_ops_check(model, element_spec[0])]
    if target == "tpu" and prepared.data.spec.eval_examples is not None:
        checks.append(eval_batches_check(prepared.data.spec.eval_examples, config.train.batch_size))
    log("compiling one train step with XLA and running it on a real batch")
    features, labels = next(iter(prepared.data.train))
    try:
        logs = model.train_on_batch(features, labels, return_dict=True)
    except Exception as e:  # any failure here is what the check reports
        checks.append(xla_failure(e, target))
        checks.append(Check("precision", "fail", f"{precision} not checked: the train step did not run",
                            "fix the XLA check first"))
        return checks, None
    checks.append(Check("xla compile", "pass", f"one train step compiled with XLA and ran (loss {logs['loss']:.4g})"))
    checks.append(precision_check(precision, target, model, logs))
    memory = estimate_memory(model, per_replica, traced=True)
    checks.append(memory_check(memory, target, per_replica))
    return checks, memory


def batch_check(global_batch: int, replicas: int, target: str) -> Check:
    """The global batch splits evenly over the replicas (and, on TPU, into multiples of 8 per core)."""
    unit = replicas * (TPU_BATCH_MULTIPLE if target == "tpu" else 1)
    suggestion = max(unit, round(global_batch / unit) * unit)
    if global_batch % replicas:
        return Check("batch size", "fail", f"global batch {global_batch} does not split over {replicas} replicas",
                     f"--config.train.batch_size={suggestion}")
    per_replica = global_batch // replicas
    if target == "tpu" and per_replica % TPU_BATCH_MULTIPLE:
        return Check("batch size", "warn", f"{per_replica} per TPU core is not a multiple of {TPU_BATCH_MULTIPLE}: "
                     "the core pads it and wastes the padding", f"--config.train.batch_size={suggestion}")
    return Check("batch size", "pass", f"global batch {global_batch} = {per_replica} per replica x {replicas}")


def eval_batches_check(eval_examples: int, global_batch: int) -> Check:
    """On TPU the eval split is batched with drop_remainder: it must hold at least one global batch."""
    steps, dropped = divmod(eval_examples, global_batch)
    if not steps:
        return Check("eval split", "fail", f"{eval_examples} eval examples are fewer than one global batch of "
                     f"{global_batch}: on TPU no eval step runs", "use a larger data.eval_split or a smaller batch")
    return Check("eval split", "pass", f"{steps} eval steps of {global_batch}" +
                 (f"; the last {dropped} examples are dropped on TPU" if dropped else ""))


def _local_paths(model_dir: str | None, data_config: ml_collections.ConfigDict) -> list[str]:
    """Paths that a run reads or writes, other than gs:// ones."""
    kind, _, arg = data_config.source.partition(":")
    paths = {"model_dir": model_dir or None}
    if kind == "tfds":
        paths["data.data_dir"] = data_config.data_dir or "~/tensorflow_datasets (TFDS default)"
    elif kind in ("idx", "npz", "tfrecord", "text"):
        paths["data.source"] = arg
    return [f"{key}={value}" for key, value in paths.items() if value and not value.startswith("gs://")]


def paths_check(model_dir: str | None, data_config: ml_collections.ConfigDict, target: str, tpu: str,
                replicas: int) -> Check:
    """A TPU Node or a multi-host slice reads and writes files from the TPU hosts: only gs:// reaches them."""
    local = _local_paths(model_dir, data_config)
    if target != "tpu" or not local:
        return Check("paths", "pass", "local paths are fine on one GPU machine" if local else "all paths are gs://")
    remote_host = tpu not in ("", "local")
    if remote_host or replicas > TPU_CORES_PER_HOST:
        why = f"a TPU Node (--tpu={tpu})" if remote_host else f"{replicas} cores span several TPU hosts"
        return Check("paths", "fail", f"{why} cannot reach local paths ({', '.join(local)}); TensorFlow says "
                     "\"File system scheme '[local]' not implemented\"",
                     "put them in a bucket: --model_dir=gs://BUCKET/runs/NAME --config.data.data_dir=gs://BUCKET/tfds")
    return Check("paths", "warn", f"local paths ({', '.join(local)}) work on a single-host TPU VM (Colab, v2-8, "
                 "v3-8) only", "use gs://BUCKET/... paths for a TPU Node or a multi-host slice")


def shapes_check(element_spec: tuple, model: keras.Model, target: str) -> Check:
    """Every batch and feature dimension is static: XLA compiles one program per shape.

    A dynamic feature dimension (a sequence length) recompiles for every new length: a fail on TPU. A dynamic
    batch dimension alone is padded by the TPU (slower): a warning.
    """
    batch, other = [], []
    for name, spec in zip(("features", "labels"), element_spec):
        for leaf in tf.nest.flatten(spec):
            if leaf.shape.rank is None:
                other.append(f"{name} have unknown rank")
                continue
            dims = leaf.shape.as_list()
            if dims and dims[0] is None:
                batch.append(f"{name} batch dimension is not static")
            other += [f"{name} dimension {i} is None" for i, d in enumerate(dims) if i and d is None]
    for tensor in model.inputs:
        other += [f"model input '{tensor.name}' dimension {i} is None"
                  for i, d in enumerate(tensor.shape) if i and d is None]
    if not batch and not other:
        shapes = ", ".join(str(tuple(s.shape)) for s in tf.nest.flatten(element_spec))
        return Check("static shapes", "pass", f"batch and feature shapes are static: {shapes}")
    fixes = (["batch with drop_remainder=True, or restore the batch size with tf.ensure_shape"] if batch else []) + \
            (["pad or truncate sequences to a fixed length (data.sequence_length) and give keras.Input a full "
              "shape"] if other else [])
    return Check("static shapes", "fail" if other and target == "tpu" else "warn", "; ".join(batch + other),
                 "; ".join(fixes))


def graph_ops_check(model: keras.Model, features_spec: tf.TensorSpec) -> Check:
    """No string ops or py_function in the model's graph: neither runs on a TPU."""
    spec = tf.TensorSpec([1, *features_spec.shape[1:]], features_spec.dtype)
    try:
        graph = tf.function(lambda x: model(x, training=True)).get_concrete_function(spec).graph.as_graph_def()
    except Exception as e:  # a model that cannot be traced cannot run on an accelerator either
        return Check("model ops", "fail", f"the model cannot be traced as a graph: {_first_line(e)}",
                     "make the model's call() work inside tf.function (no Python-side tensor values)")
    nodes = list(graph.node) + [node for function in graph.library.function for node in function.node_def]
    python = sorted({node.name.split("/")[-2] if "/" in node.name else node.name
                     for node in nodes if node.op in PY_FUNCTION_OPS})
    strings = sorted({node.op for node in nodes if _uses_strings(node)})
    problems = ([f"py_function in layer(s) {', '.join(python)}"] if python else []) + \
               ([f"string ops {', '.join(strings)}"] if strings else [])
    if not problems:
        return Check("model ops", "pass", f"{len(nodes)} ops, no string ops or py_function")
    return Check("model ops", "fail", f"the model has {' and '.join(problems)}: TPUs run neither",
                 "move text processing and Python code into the tf.data pipeline (nntrain/data), out of the model")


def _uses_strings(node: tf.compat.v1.NodeDef) -> bool:
    op_def = tf_registry.op_def(node.op)
    if op_def is None:
        return False
    for arg in [*op_def.input_arg, *op_def.output_arg]:
        if arg.type == types_pb2.DT_STRING:
            return True
        if arg.type_attr and node.attr[arg.type_attr].type == types_pb2.DT_STRING:
            return True
        if arg.type_list_attr and types_pb2.DT_STRING in node.attr[arg.type_list_attr].list.type:
            return True
    return False


def xla_failure(error: Exception, target: str) -> Check:
    """Names the ops XLA could not compile (GPUs can run without XLA: a warning there)."""
    message = str(error)
    ops = sorted(set(re.findall(r"No registered '(\w+)' OpKernel for XLA", message)))
    nodes = sorted(set(re.findall(r"\{\{node ([^}]+)\}\}", message)))
    if ops:
        detail = f"XLA cannot compile op(s) {', '.join(ops)}" + (f" (at {', '.join(nodes[:3])})" if nodes else "")
    else:
        detail = f"the XLA train step failed: {_first_line(error)}"
    fix = ("replace those ops with XLA-compatible ones, or move them into the tf.data pipeline"
           if target == "tpu" else "it runs without XLA on GPU: --config.train.jit_compile=false")
    return Check("xla compile", "fail" if target == "tpu" else "warn", detail, fix)


def _first_line(error: Exception) -> str:
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    return f"{type(error).__name__}: {first[:200]}"


def precision_check(precision: str, target: str, model: keras.Model, logs: dict) -> Check:
    """The target's mixed precision gave a finite loss, with float32 outputs."""
    if target == "tpu" and precision == "mixed_float16":
        return Check("precision", "fail", "TPUs compute in bfloat16, not float16",
                     "--config.train.precision=auto (mixed_bfloat16 on TPU)")
    if not all(math.isfinite(float(value)) for value in logs.values()):
        return Check("precision", "fail", f"one {precision} step gave non-finite metrics {logs}",
                     "--config.train.precision=float32, or lower optimizer.learning_rate")
    outputs = [tensor.dtype for tensor in model.outputs]
    if precision != "float32" and any(dtype != "float32" for dtype in outputs):
        return Check("precision", "warn", f"model outputs are {outputs} under {precision}: the loss loses precision",
                     "give the output layer dtype='float32'")
    if target == "tpu" and precision == "float32":
        return Check("precision", "warn", "float32 on TPU runs matmuls at a fraction of bfloat16 speed",
                     "--config.train.precision=auto (mixed_bfloat16)")
    return Check("precision", "pass", f"{precision}: a finite loss in one XLA step, float32 outputs")


def memory_check(memory: Memory, target: str, per_replica_batch: int) -> Check:
    """Warns above half the memory of one replica's device (the estimate is rough), fails above all of it."""
    available = DEVICE_MEMORY_GIB[target] * 2**30
    detail = (f"~{memory.total_bytes / MIB:,.2f} MiB per replica: {memory.parameters:,} parameters "
              f"({memory.parameter_bytes / MIB:,.2f} MiB) + gradients {memory.gradient_bytes / MIB:,.2f} MiB + "
              f"optimizer {memory.optimizer_bytes / MIB:,.2f} MiB + activations at batch {per_replica_batch} "
              f"{memory.activation_bytes / MIB:,.2f} MiB, of {DEVICE_MEMORY_GIB[target]} GiB on {DEVICE_NAME[target]}")
    if memory.total_bytes > available:
        return Check("memory", "fail", detail, "lower train.batch_size or the model size, or use more replicas")
    if memory.total_bytes > available / 2:
        return Check("memory", "warn", detail, "leave headroom: XLA's buffers are not in this estimate")
    return Check("memory", "pass", detail)
