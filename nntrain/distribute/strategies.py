"""`--strategy` names to tf.distribute strategies, with advice instead of raw TF errors."""

from __future__ import annotations

import os
import tempfile

import tensorflow as tf

from nntrain import quiet, registry
from nntrain.compat import collective_keys, mwms_reduce
from nntrain.distribute import diagnostics, resolvers, runtime, tf_config, watchdog
from nntrain.errors import NntrainError
from nntrain.logs import log


def create_strategy(name: str = "auto", tpu: str = "") -> tf.distribute.Strategy:
    """The strategy registered as `name` (registry.STRATEGIES: the built-ins below and nntrain.register_strategy);
    `tpu` is local, a TPU name or grpc://HOST:PORT."""
    return registry.STRATEGIES.get(name)(tpu)


def cpu(tpu: str = "") -> tf.distribute.Strategy:
    """One CPU."""
    return tf.distribute.OneDeviceStrategy("/cpu:0")


def one_device(tpu: str = "") -> tf.distribute.Strategy:
    """The first GPU, else the CPU."""
    gpus = tf.config.list_logical_devices("GPU")
    return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")


def kind(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'multi_worker', 'mirrored' or 'single': what the execution defaults depend on."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return "multi_worker"
    if isinstance(strategy, tf.distribute.MirroredStrategy):
        return "mirrored"
    return "single"


def accelerator(strategy: tf.distribute.Strategy) -> str:
    """'tpu', 'gpu' or 'cpu': the device type the strategy computes on."""
    if kind(strategy) == "tpu":
        return "tpu"
    if any("GPU" in d.upper() for d in devices(strategy)):
        return "gpu"
    return "cpu"


def devices(strategy: tf.distribute.Strategy) -> tuple[str, ...]:
    """The devices the strategy computes on (for the default strategy: TensorFlow's default device)."""
    if _is_default(strategy):
        gpus = tf.config.list_logical_devices("GPU")
        return ((gpus or tf.config.list_logical_devices("CPU"))[0].name,)
    return tuple(getattr(strategy.extended, "worker_devices", ()) or ())


def describe(strategy: tf.distribute.Strategy) -> str:
    """One line: strategy class, replica count and devices."""
    names = ", ".join(d.split("/", 3)[-1] if d.count("/") >= 3 else d for d in devices(strategy))
    name = "default strategy (plain Keras)" if _is_default(strategy) else type(strategy).__name__
    return f"{name} with {strategy.num_replicas_in_sync} replica(s) [{names}]"


def _is_default(strategy: tf.distribute.Strategy) -> bool:
    """The strategy TensorFlow uses outside any scope: what plain Keras trains with."""
    return type(strategy).__name__ == "_DefaultDistributionStrategy"


def auto(tpu: str = "") -> tf.distribute.Strategy:
    """A TPU if one is named or attached, all GPUs (one: OneDeviceStrategy), else the default strategy."""
    if tpu or runtime.tpu_attached():
        return tpu_strategy(tpu or "local")
    gpus = tf.config.list_logical_devices("GPU")
    if len(gpus) > 1:
        return _new_mirrored([d.name for d in gpus])
    if gpus:
        return tf.distribute.OneDeviceStrategy(gpus[0].name)
    # CPU only: the default strategy, as in plain Keras. OneDeviceStrategy builds a new multi-device iterator for
    # every evaluate (twice per epoch), which doubled mnist_mlp's epoch time (docs/benchmarks.md).
    return tf.distribute.get_strategy()


def mirrored(tpu: str = "") -> tf.distribute.MirroredStrategy:
    """All GPUs, else the CPU, in sync."""
    gpus = tf.config.list_logical_devices("GPU")
    devices = gpus or tf.config.list_logical_devices("CPU")
    return _new_mirrored([d.name for d in devices])


def _new_mirrored(devices: list[str]) -> tf.distribute.MirroredStrategy:
    """A MirroredStrategy with collective keys of its own, so that several can train in one process
    (nntrain/compat/collective_keys.py)."""
    with collective_keys.distinct_keys():
        return tf.distribute.MirroredStrategy(devices)


def tpu_strategy(tpu: str = "") -> tf.distribute.TPUStrategy:
    """The TPU `tpu` names (--tpu)."""
    if not tpu:
        raise NntrainError("--strategy=tpu needs --tpu: --tpu=local on a TPU VM (Colab, Cloud TPU VM), "
                           "or the TPU name / grpc://HOST:PORT of a TPU node")
    if tpu.startswith("grpc://"):
        os.environ.setdefault("GRPC_FAIL_FAST", "true")  # an unreachable address fails instead of hanging
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        if tpu != "local":
            tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, tf.errors.OpError, RuntimeError) as e:
        raise NntrainError(_tpu_advice(tpu, str(e))) from e
    except OSError as e:  # a TPU name is looked up on the GCE metadata server, found only on Google Cloud
        raise NntrainError(f"could not look up TPU '{tpu}': the GCE metadata server did not answer ({e}); "
                           "TPU names work on Google Cloud only: on a TPU VM (Colab, Cloud TPU VM) use --tpu=local, "
                           "elsewhere --tpu=grpc://HOST:8470") from e
    return tf.distribute.TPUStrategy(resolver)


def _tpu_advice(tpu: str, message: str) -> str:
    first_line = message.strip().splitlines()[0][:200] if message.strip() else "unknown error"
    if "No OpKernel" in message and "ConfigureDistributedTPU" in message:
        return (f"no TPU for --tpu={tpu}: this TensorFlow has no TPU kernels; on a TPU VM install them with "
                f"`{diagnostics.tpu_install_line(tf.__version__)}`, elsewhere use --strategy=auto")
    if "TPUs not found" in message:
        return f"no TPU found for --tpu={tpu} ({first_line}); check that a TPU is attached, or use --strategy=auto"
    if "[local]' not implemented" in message:
        return (f"TPU --tpu={tpu} cannot read local files: put model_dir and data_dir on gs:// paths, "
                "or use a TPU VM with --tpu=local")
    return f"could not connect to TPU '{tpu}': {first_line}; on a TPU VM use --tpu=local"


def multi_worker(tpu: str = "") -> tf.distribute.MultiWorkerMirroredStrategy:
    """The workers TF_CONFIG or a Slurm step names (`resolvers`), once all have joined."""
    return mwms_reduce.patch(connect(resolvers.resolve()))


def connect(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> tf.distribute.MultiWorkerMirroredStrategy:
    """The strategy, once every task of the cluster has joined; one line and exit 1 after --worker_timeout.

    From here on TensorFlow's C++ log records go to a file (`tf_log_path`), so a lost peer is one line.
    """
    timeout, path = tf_config.worker_timeout(), tf_log_path()
    hosts, me = resolvers.tasks(resolver), resolvers.this_task(resolver)
    port = resolver.cluster_spec().task_address(resolver.task_type, resolver.task_id).rpartition(":")[2]
    quiet.native_stderr_to_file(path)
    log(f"multi-worker: {me} of {len(hosts)} waits up to {timeout:g} s (--worker_timeout) for the others; "
        f"TensorFlow's log: {path}")
    log(f"multi-worker: TensorFlow's gRPC server listens on every interface at port {port} "
        "(it cannot bind to one address) without authentication: keep the workers on a private network")
    with watchdog.exit_unless_done(timeout, f"{me}: not every worker of {','.join(hosts)} joined within "
                                   f"--worker_timeout={timeout:g} s: start each with the same command and its own "
                                   f"--task_index (TensorFlow's log: {path})", path):
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)


def tf_log_path() -> str:
    """Where this process's TensorFlow C++ log records go once it joins a multi-worker run."""
    return os.path.join(tempfile.gettempdir(), f"nntrain-tensorflow-{os.getpid()}.log")
