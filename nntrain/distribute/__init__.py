"""Where a run executes: `--strategy` names to tf.distribute strategies (`strategies`), the runtime and devices
(`runtime`, `diagnostics` for `nntrain doctor`), execution defaults per device (`execution`), and multi-worker
runs (`cluster`, `tf_config`, `resolvers`, `addresses`, `launch`, `watchdog`). It may import only the foundation:
`errors`, `logs`, `quiet`, `compat` and `rundir` (never config, data, models, run or anything above). Importing the
package imports no TensorFlow: `tf_config`, `addresses` and `launch` are used before TensorFlow starts.
"""
