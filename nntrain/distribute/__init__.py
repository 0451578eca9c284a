"""Where a run executes: `--strategy` names to tf.distribute strategies (`strategies`), the runtime and devices
(`runtime`, `diagnostics` for `nntrain doctor`), execution defaults per device (`execution`), and multi-worker
runs (`cluster`, `tf_config`, `resolvers`, `addresses`, `launch`, `watchdog`). It may import the foundation (`errors`,
`logs`, `quiet`, `compat`, `rundir`), `registry` and `config`; never data, models, run or anything above. Importing
the package imports no TensorFlow: `tf_config`, `addresses` and `launch` are used before TensorFlow starts, and
the built-in strategies are registered by their import path (one line each), imported on first use.
"""

from nntrain.registry import STRATEGIES

STRATEGIES.add("auto", "nntrain.distribute.strategies:auto")
STRATEGIES.add("cpu", "nntrain.distribute.strategies:cpu")
STRATEGIES.add("one_device", "nntrain.distribute.strategies:one_device")
STRATEGIES.add("mirrored", "nntrain.distribute.strategies:mirrored")
STRATEGIES.add("tpu", "nntrain.distribute.strategies:tpu_strategy")
STRATEGIES.add("multi_worker", "nntrain.distribute.strategies:multi_worker")
