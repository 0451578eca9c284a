"""What a notebook or script runs on (Colab or not; TPU, GPU or CPU) and the `strategy` that works there.

`in_colab` and `tpu_attached` import no TensorFlow, so an install cell can use them before TensorFlow is set up.
"""

from __future__ import annotations

import dataclasses
import os
import sys

# A TPU VM exposes its chips as /dev/accel* (TPU v2-v4) or /dev/vfio/* (v5e and later).
TPU_DEVICE_FILES = ("/dev/accel0", "/dev/vfio/0")


@dataclasses.dataclass(frozen=True)
class Runtime:
    accelerator: str  # "tpu", "gpu" or "cpu"
    devices: tuple[str, ...]  # accelerator names, e.g. ("Tesla T4",); () on CPU
    colab: bool
    strategy: str  # the `strategy=` value for nntrain.train that works here
    advice: str  # what to do to use the hardware better; "" when nothing

    def describe(self) -> str:
        """One line: where this runs and on what."""
        where = "Colab" if self.colab else "a local machine"
        what = f"{len(self.devices)} x {self.devices[0]}" if self.devices else self.accelerator.upper()
        return f"{where}, {self.accelerator.upper()} runtime ({what}); nntrain.train(strategy='{self.strategy}')"


def in_colab() -> bool:
    """True inside a Google Colab kernel."""
    return "google.colab" in sys.modules


def tpu_attached() -> bool:
    """True on a TPU VM (TPU device files present) or where TPU_NAME points at a TPU node."""
    return bool(os.environ.get("TPU_NAME")) or any(os.path.exists(path) for path in TPU_DEVICE_FILES)


def detect() -> Runtime:
    """Finds the accelerator and says which strategy to train with, and what to change if anything."""
    from nntrain import quiet

    quiet.import_tensorflow_quietly()  # TensorFlow's start-up lines would fill a notebook cell
    import tensorflow as tf

    from nntrain.distribute import diagnostics

    colab = in_colab()
    if tpu_attached():
        if diagnostics.tpu_kernels_registered():
            return Runtime("tpu", ("TPU",), colab, "auto", "")
        return Runtime("tpu", ("TPU",), colab, "cpu",
                       f"a TPU is attached but TensorFlow {tf.__version__} has no TPU kernels, so this trains on "
                       f"the CPU: run `{diagnostics.tpu_install_line(tf.__version__)}`, restart the runtime "
                       "(notebooks/tpu.ipynb does both)")
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        names = tuple(tf.config.experimental.get_device_details(gpu).get("device_name", gpu.name) for gpu in gpus)
        return Runtime("gpu", names, colab, "auto", "")
    advice = "Runtime > Change runtime type > a GPU or TPU trains faster" if colab else ""
    return Runtime("cpu", (), colab, "auto", advice)
