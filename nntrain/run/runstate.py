"""The files of a run directory that a run rewrites (config.json, dataset.json, metrics.jsonl): read once and
checked before anything is written, compared with the new run, put back if the run diverges.

During a run, `RunState` is the one writer of metrics.jsonl: it keeps the lines in memory and rewrites the file
whole (`rundir.write_jsonl`) once per epoch. Checkpoints (checkpoints/state.json and the .keras files it names)
are read by `checkpoints.resume_point`; `undo` reads only state.json's step.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import ml_collections

from nntrain import config as nn_config
from nntrain import models, rundir
from nntrain.errors import NntrainError
from nntrain.logs import log

if TYPE_CHECKING:
    from nntrain.data.spec import DatasetSpec

# Optimizer keys whose change gives the optimizer other variables than a checkpoint holds (a resume would fail to
# load them): EMA on or off, accumulation on or off (another number of steps keeps the same accumulators).
OPTIMIZER_STATE = {"use_ema": lambda saved, now: bool(saved) != bool(now),
                   "gradient_accumulation_steps": lambda saved, now: (saved is None) != (now is None)}


@dataclasses.dataclass
class RunState:
    """config.json and dataset.json as a run found them (text and parsed; None where absent), and metrics.jsonl's
    lines as the run has them."""

    model_dir: str
    config_text: str | None
    config: dict | None
    spec_text: str | None
    spec: dict | None
    metrics: list[dict]
    metrics_found: bool  # metrics.jsonl is there (an empty file counts)

    @classmethod
    def load(cls, model_dir: str) -> RunState:
        """Reads each file once; Damaged, one line naming the file, if one is not what nntrain writes."""
        config_path = rundir.join(model_dir, rundir.CONFIG)
        config_text, config = rundir.read_json_text(config_path)
        if rundir.json_object(config_path, config) is not None:
            try:
                nn_config.from_dict(config, config_path)
            except NntrainError as e:
                raise rundir.damaged(config_path, str(e).split(": ", 1)[-1]) from None
        spec_path = rundir.join(model_dir, rundir.DATASET)
        spec_text, spec = rundir.read_json_text(spec_path)
        metrics_path = rundir.join(model_dir, rundir.METRICS)
        metrics_text, metrics = rundir.read_jsonl_text(metrics_path)
        for number, record in enumerate(metrics, 1):
            if not isinstance(record.get("epoch"), int):
                raise rundir.damaged(metrics_path, f"line {number} has no epoch number")
        return cls(model_dir, config_text, config, spec_text, rundir.json_object(spec_path, spec), metrics,
                   metrics_text is not None)

    def check_same_model(self, config: ml_collections.ConfigDict) -> None:
        """A model_dir holds one model and its optimizer state: resuming with another architecture, or with EMA or
        gradient accumulation turned on or off, is refused (naming the keys); other changes are logged."""
        if self.config is None:
            return
        current = nn_config.to_dict(config)
        current["model"] = models.as_built(current["model"])  # a key gained since: as its absence builds
        saved_model = self.config.get("model")
        saved_model = models.as_built(saved_model) if isinstance(saved_model, dict) else saved_model
        saved_config = {**self.config, "model": saved_model}  # as the run was built
        if saved_model != current["model"]:
            saved = saved_model if isinstance(saved_model, dict) else {}
            differ = ", ".join(f"model.{key}={saved.get(key)!r} (now {current['model'].get(key)!r})"
                               for key in sorted(set(saved) | set(current["model"]))
                               if saved.get(key) != current["model"].get(key))
            raise NntrainError(f"model_dir '{self.model_dir}' holds a run of another model ({differ}); use a new "
                               "--model_dir, or the run's model config to resume")
        saved_optimizer = self.config.get("optimizer") if isinstance(self.config.get("optimizer"), dict) else {}
        keys = [key for key, changed in OPTIMIZER_STATE.items()
                if key in saved_optimizer and changed(saved_optimizer[key], current["optimizer"][key])]
        if keys:
            differ = ", ".join(f"optimizer.{key}={saved_optimizer[key]!r} (now {current['optimizer'][key]!r})"
                               for key in keys)
            named = " and ".join(f"optimizer.{key}" for key in keys)
            raise NntrainError(f"model_dir '{self.model_dir}' holds a run whose optimizer keeps other state "
                               f"({differ}); resume with the run's {named}, or use a new --model_dir")
        changed = sorted(f"{section}.{key}" for section in current if isinstance(current[section], dict)
                         for key in current[section]
                         if saved_config.get(section, {}).get(key) != current[section][key])
        if changed:
            log(f"resuming with a changed config: {', '.join(changed)}")

    def check_same_data(self, spec: DatasetSpec) -> None:
        """A model_dir's weights fit one input shape and number of classes: resuming on other data is refused."""
        if self.spec is None:
            return
        for key, new in (("input_shape", list(spec.input_shape)), ("num_classes", spec.num_classes)):
            if key in self.spec and self.spec[key] != new:
                raise NntrainError(f"model_dir '{self.model_dir}' holds a run on data of {key} {self.spec[key]}, "
                                   f"this data has {key} {new}: use a new --model_dir, or the run's data to resume")

    def metrics_until(self, epoch: int) -> list[dict]:
        """The metrics lines of epochs 1 to `epoch`."""
        return [record for record in self.metrics if record["epoch"] <= epoch]

    def keep_metrics(self, epoch: int) -> None:
        """Drops the lines of epochs after `epoch` (they run again, or no checkpoint committed them); writes
        metrics.jsonl if a line went or there is no file yet."""
        kept = self.metrics_until(epoch)
        if kept != self.metrics or not self.metrics_found:
            self.metrics = kept
            self._write_metrics()

    def add_metrics(self, record: dict) -> None:
        """Adds an epoch's line: one rewrite of metrics.jsonl, no read (`rundir.write_jsonl` says why)."""
        self.metrics.append(record)
        self._write_metrics()

    def _write_metrics(self) -> None:
        rundir.write_jsonl(rundir.join(self.model_dir, rundir.METRICS), self.metrics)
        self.metrics_found = True

    def undo(self, steps_per_epoch: int) -> None:
        """After a run that diverged: config.json and dataset.json as they were (those that were there), and no
        metrics line for an epoch that no checkpoint committed (an epoch's line is written before its checkpoint)."""
        for name, text in ((rundir.CONFIG, self.config_text), (rundir.DATASET, self.spec_text)):
            if text is not None:
                rundir.write_text(rundir.join(self.model_dir, name), text)
        state = rundir.read_state(rundir.checkpoint_dir(self.model_dir))
        self.keep_metrics(state.get("step", 0) // steps_per_epoch if state else 0)
