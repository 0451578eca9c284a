"""The cluster of a multi-worker run, from the environment its scheduler gives it.

- `TF_CONFIG`: set by `--worker_hosts`/`--task_index` (tf_config.py), by Kubeflow's TFJob and by Vertex AI
  (both may add a `chief` job beside `worker`);
- Slurm: `srun` sets `SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_STEP_NODELIST` and
  `SLURM_STEP_TASKS_PER_NODE`; TensorFlow's `SlurmClusterResolver` turns them into one worker per task, on ports
  `SLURM_PORT_BASE` upwards on each node.
"""

from __future__ import annotations

import json
import os

import tensorflow as tf

from nntrain.errors import NntrainError

SLURM_PORT_BASE = 8888  # TensorFlow's default: the first task on a node listens there, the next on 8889, ...
_SLURM_STEP = ("SLURM_PROCID", "SLURM_STEP_NUM_TASKS", "SLURM_STEP_NODELIST", "SLURM_STEP_TASKS_PER_NODE")
_TF_CONFIG_SHAPE = '{"cluster": {"worker": [HOST:PORT, ...]}, "task": {"type": "worker", "index": N}}'


def resolve() -> tf.distribute.cluster_resolver.ClusterResolver:
    """The cluster and this process's task: from TF_CONFIG if set, else from Slurm's step variables."""
    if os.environ.get("TF_CONFIG"):
        return _from_tf_config(os.environ["TF_CONFIG"])
    if all(os.environ.get(name) for name in _SLURM_STEP):
        return _from_slurm()
    raise NntrainError("--strategy=multi_worker needs TF_CONFIG (cluster and task) in the environment, "
                       "--worker_hosts and --task_index, or a Slurm step (srun); see docs/scaling.md")


def tasks(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> list[str]:
    """Every task's HOST:PORT, the chief's first."""
    spec = resolver.cluster_spec()
    return [address for job in ("chief", "worker") if job in spec.jobs for address in spec.job_tasks(job)]


def this_task(resolver: tf.distribute.cluster_resolver.ClusterResolver) -> str:
    """'worker 1' or 'chief 0'."""
    return f"{resolver.task_type} {resolver.task_id}"


def _from_tf_config(raw: str) -> tf.distribute.cluster_resolver.TFConfigClusterResolver:
    try:
        config = json.loads(raw)
        jobs = {job: list(config["cluster"][job]) for job in ("chief", "worker") if job in config["cluster"]}
        task_type, index = config["task"]["type"], int(config["task"]["index"])
    except (ValueError, KeyError, TypeError) as e:
        raise NntrainError(f"TF_CONFIG is not valid ({e!r}): it needs {_TF_CONFIG_SHAPE}") from e
    if task_type not in jobs or not 0 <= index < len(jobs[task_type]):
        sizes = ", ".join(f"{job}: {len(hosts)}" for job, hosts in jobs.items()) or "no chief or worker"
        raise NntrainError(f"TF_CONFIG's task {task_type} {index} is not in its cluster ({sizes}): it needs "
                           f"{_TF_CONFIG_SHAPE}")
    return tf.distribute.cluster_resolver.TFConfigClusterResolver()


class _SlurmWorkers(tf.distribute.cluster_resolver.SlurmClusterResolver):
    """One worker per Slurm task, computing on the devices the task sees. TensorFlow's resolver also hands out
    GPUs: with none (gpus_per_node=0) it fails (range() step 0) and by default it asks nvidia-smi; so it is given
    one GPU slot per task, told not to set CUDA_VISIBLE_DEVICES (Slurm binds GPUs itself, e.g. `srun
    --gpus-per-task=1`), and asked for the GPUs this task sees (its own answer, the slot, made the strategy compute
    on a GPU:0 that did not exist: other numbers than the same run from TF_CONFIG)."""

    def num_accelerators(self, task_type=None, task_id=None, config_proto=None) -> dict[str, int]:
        gpus = len(tf.config.list_physical_devices("GPU"))
        return {"GPU": gpus} if gpus else {}


def _from_slurm() -> tf.distribute.cluster_resolver.SlurmClusterResolver:
    total = int(os.environ["SLURM_STEP_NUM_TASKS"])
    try:
        return _SlurmWorkers(port_base=SLURM_PORT_BASE, gpus_per_node=total, gpus_per_task=1, auto_set_gpu=False)
    except (RuntimeError, ValueError) as e:
        raise NntrainError(f"the Slurm step's variables do not describe a cluster ({e}): run nntrain under srun "
                           "with --ntasks set") from e
