"""The run core: one training run from its config to its files. `trainer` builds data and model under a
strategy and fits; `runstate` owns the files a run rewrites and the undo of a failed run; `checkpoints` the
step checkpoints and resume (`bundles` their files, written while training goes on); `callbacks` the metrics
file and the NaN guard; `preemption` SIGTERM/SIGINT; `guards` what passes validation
but would fail later (metrics, memory, export and search dirs); `optim`, `prune` and `bits_per_byte` the training
recipe; `preflight` the CPU check that an experiment will run on a TPU or GPU. It may import the foundation
(`errors`, `logs`, `quiet`, `compat`, `rundir`), `registry`, `config`, `distribute`, `data` and `models`; never
`exports`, `tuning`, `benchmark`, `api` or `cli`.
"""
