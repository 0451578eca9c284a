"""`nntrain doctor`: versions, devices, TPU kernels, gs:// support and model_dir, with a fix for each problem."""

from __future__ import annotations

import importlib.metadata
import platform

from nntrain.errors import NntrainError

PACKAGES = ("tensorflow", "tensorflow-cpu", "tensorflow-tpu", "keras", "tensorflow-datasets", "keras-tuner",
            "libtpu", "tensorboard")


def _check(name: str, status: str, detail: str, fix: str = "") -> dict:
    return {"check": name, "status": status, "detail": detail, "fix": fix}


def run_checks(model_dir: str | None = None) -> list[dict]:
    """Each check is {check, status (ok|warn|fail|info), detail, fix}."""
    from nntrain import quiet

    quiet.import_tensorflow_quietly()
    import tensorflow as tf

    checks = [_check("python", "ok", platform.python_version())]
    for package in PACKAGES:
        try:
            checks.append(_check(package, "ok", importlib.metadata.version(package)))
        except importlib.metadata.PackageNotFoundError:
            required = package in ("tensorflow", "keras", "tensorflow-datasets", "keras-tuner")
            if package == "tensorflow" and _installed("tensorflow-cpu"):
                required = False
            if required:
                checks.append(_check(package, "fail", "not installed", f"pip install {package}"))
    devices = {kind: [d.name for d in tf.config.list_physical_devices(kind)] for kind in ("CPU", "GPU", "TPU")}
    checks.append(_check("devices", "ok", ", ".join(f"{k}: {len(v)}" for k, v in devices.items())))
    if not devices["GPU"] and tf.test.is_built_with_cuda():
        checks.append(_check("gpu", "info", "TensorFlow has CUDA support but sees no GPU",
                             "on a GPU machine check `nvidia-smi` and the CUDA driver"))
    if tpu_kernels_registered():
        checks.append(_check("tpu kernels", "ok", "TPU ops are registered"))
    else:
        checks.append(_check("tpu kernels", "info", "this TensorFlow has no TPU kernels (fine off TPU)",
                             f"on a TPU VM: {tpu_install_line(tf.__version__)}"))
    if "gs" in tf.io.gfile.get_registered_schemes():
        checks.append(_check("gs:// paths", "ok", "the gs:// file system is registered"))
    else:
        checks.append(_check("gs:// paths", "warn", "no gs:// file system: TPU nodes and multi-host runs need it",
                             "pip install tensorflow-io-gcs-filesystem"))
    if model_dir:
        checks.append(_writable(model_dir))
    return checks


def _installed(package: str) -> bool:
    try:
        importlib.metadata.version(package)
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def tpu_kernels_registered() -> bool:
    """True when this TensorFlow can drive a TPU (tensorflow-tpu installed)."""
    from nntrain.compat import tf_registry

    return tf_registry.has_kernels("ConfigureDistributedTPU")


def tpu_build(tf_version: str) -> str:
    """The newest tensorflow-tpu release not newer than the installed TF (2.20.0 is the last one)."""
    major, minor = (int(part) for part in tf_version.split(".")[:2])
    return "2.20.0" if (major, minor) > (2, 20) else tf_version


def tpu_install_line(tf_version: str) -> str:
    """The pip command that gives TF with TPU kernels: tensorflow and tensorflow-tpu of the same release."""
    build = tpu_build(tf_version)
    return (f"pip install tensorflow=={build} tensorflow-tpu=={build} "
            "-f https://storage.googleapis.com/libtpu-tf-releases/index.html")


def _writable(model_dir: str) -> dict:
    """rundir.check's verdict: a local directory is probed with a real write; elsewhere, whether TensorFlow opens
    the path's scheme."""
    from nntrain import rundir

    try:
        rundir.check(model_dir)
    except NntrainError as e:
        return _check("model_dir", "fail", str(e), "choose a directory you can write to")
    opens = "is writable" if rundir.is_local(model_dir) else "opens in TensorFlow (writes not probed)"
    return _check("model_dir", "ok", f"'{model_dir}' {opens}")
