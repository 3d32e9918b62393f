"""Weights & Biases tracking of a run: the resolved config, every meta-iteration's record (meta-loss,
pre/post-update MSEs, firing rates, gradient norm, learning rate, iterations per second, skipped steps) and the
evaluation's metrics and figures.

``mode`` comes from the config: ``offline`` (default; the run lands in ``<run dir>/wandb``, upload later with
``wandb sync``), ``online`` or ``disabled`` (tests). Offline never touches the network. Only rank 0 tracks. A
resumed run continues the same W&B run (its id is stored in the run directory).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

RUN_ID_FILE = "wandb_run_id"


class Tracker:
    def __init__(self, run):
        self.run = run

    def log(self, record: dict) -> None:
        if self.run is None:
            return
        values = {k: v for k, v in record.items() if isinstance(v, (int, float)) and k != "iteration"}
        if record.get("seconds"):
            values["iterations_per_second"] = 1.0 / record["seconds"]
        self.run.log(values, step=int(record["iteration"]))

    def log_evaluation(self, summary: dict, figures: list[Path]) -> None:
        if self.run is None:
            return
        import wandb

        for key, value in summary.items():
            if isinstance(value, (int, float)):
                self.run.summary[f"eval/{key}"] = value
        images = {f"eval/{p.stem}": wandb.Image(str(p)) for p in figures if p.exists()}
        if images:
            self.run.log(images)

    @property
    def directory(self) -> str | None:
        return None if self.run is None else self.run.dir

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()


def _settings(wandb):
    try:  # system-metrics sampling adds a thread per run; older wandb lacks the switch
        return wandb.Settings(console="off", x_disable_stats=True)
    except (TypeError, ValueError):
        return wandb.Settings(console="off")


def start_tracking(config, run_dir: Path, enabled: bool = True) -> Tracker:
    """A W&B run for ``config`` (a :class:`~.config.TrainConfig`), or a no-op tracker when disabled."""
    if not enabled or config.wandb.mode == "disabled":
        return Tracker(None)
    import dataclasses

    import wandb

    os.environ.setdefault("WANDB_SILENT", "true")
    id_file = run_dir / RUN_ID_FILE
    run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:12]  # a name, not a draw
    id_file.write_text(run_id)
    run = wandb.init(project=config.wandb.project, entity=config.wandb.entity, name=config.wandb.name or run_dir.name,
                     group=config.wandb.group, tags=list(config.wandb.tags), mode=config.wandb.mode,
                     dir=str(run_dir), id=run_id, resume="allow", config=dataclasses.asdict(config),
                     settings=_settings(wandb))
    return Tracker(run)
