"""A multirun's directory and its index: one run directory per job (``<index>_<overrides>/``), and
``index.json``, one record per job — its overrides, the configuration keys in which the jobs differ, its run
directory, its status, exit code and one-line error — rewritten (atomically) before the jobs are handed to the
launcher and after they end:

    {"format": 1, "sweep": "seeds", "launcher": "joblib", "wandb_group": "seeds", "differ": ["optim.seed"],
     "jobs": [{"index": 0, "run_dir": "0_experiment=tiny+optim.seed=0", "overrides": [...],
               "differences": {"optim.seed": 0}, "status": "done", "exit": 0, "error": null, "iteration": 20,
               "seconds": 3.2, "started": 1764812345.1, "ended": 1764812348.3}, ...]}

Statuses: ``queued`` (handed to the launcher, no outcome yet), ``done`` (trained to ``optim.n_iterations``, and
evaluated where ``run.evaluate``), ``skipped`` (done before this invocation: not launched again), ``failed``
(its one-line error), ``incomplete`` (stopped by a signal, the time budget or a lost launcher: re-running the
sweep resumes it from its latest checkpoint). The sweep directory holds a lock (``.lock``) while an invocation
runs its jobs; the jobs lock their own run directories.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from ..config.schema import TrainConfig
from ..messages import shown_path
from . import rundir
from .evaluation import override_slug
from .plots import differing_keys, flat_config
from .training import check_resumable, is_complete

INDEX = "index.json"
FORMAT = 1
NOT_COMPARED = ("run.dir", "wandb.group")  # set by the sweep itself for each job


@dataclasses.dataclass
class Job:
    index: int
    overrides: list[str]  # the job's own overrides, as the sweep expanded them
    config: TrainConfig  # validated, with its run directory (and W&B group) set
    record: dict  # its entry in the index

    @property
    def run_dir(self) -> Path:
        return Path(self.config.run.dir)


def job_directory(base: Path, index: int, overrides: list[str]) -> Path:
    return Path(base) / f"{index}_{override_slug([o for o in overrides if not o.startswith('run.dir=')])}"


def check_base(base: Path) -> None:
    """A multirun's directory holds runs, and is not one itself."""
    for name in (rundir.CONFIG, rundir.MANIFEST):
        if (Path(base) / name).exists():
            raise rundir.RunDirError(f"run.dir: {shown_path(base)} holds a run ({name}): a multirun writes its runs "
                                     "into a directory of their own; choose another run.dir")


def with_run(cfg: TrainConfig, run_dir: str | Path, group: str | None) -> TrainConfig:
    """A job's configuration: its run directory, and ``group`` as its W&B group where it names none."""
    return dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)),
                               wandb=dataclasses.replace(cfg.wandb, group=cfg.wandb.group or group))


def plan(base: Path, jobs: list[list[str]], configs: list[TrainConfig], group: str | None) -> list[Job]:
    """Each job's run directory under ``base`` and W&B group (``group`` where the configuration names none), and
    its index entry; the keys the jobs differ in are computed from the configurations."""
    flats = [flat_config(c) for c in configs]
    keys = [k for k in differing_keys(flats) if k not in NOT_COMPARED]
    planned = []
    for index, (overrides, cfg, flat) in enumerate(zip(jobs, configs, flats, strict=True)):
        run_dir = job_directory(base, index, overrides)
        cfg = with_run(cfg, run_dir, group)
        record = {"index": index, "run_dir": run_dir.name, "overrides": list(overrides),
                  "differences": {k: flat.get(k) for k in keys}, "status": "queued", "exit": None, "error": None,
                  "iteration": None, "seconds": None, "started": None, "ended": None}
        planned.append(Job(index, list(overrides), cfg, record))
    return planned


def latest_iteration(job: Job) -> int | None:
    try:
        found = rundir.listed_checkpoints(job.run_dir)
    except rundir.RunError:
        return None
    return rundir.checkpoint_iteration(found[-1]) if found else None


def completed(job: Job) -> bool:
    """Whether the job's run directory holds its run done (see :func:`.training.is_complete`)."""
    return is_complete(check_resumable(job.run_dir, job.config), job.config)


def settle(job: Job, outcome: dict | None) -> None:
    """The job's index entry from what it returned (``outcome``: exit, error, started, ended), or — when the
    launcher returned nothing for it — from its run directory."""
    record = job.record
    if outcome is not None:
        record.update({k: outcome.get(k) for k in ("exit", "error", "started", "ended")})
        if record["started"] is not None and record["ended"] is not None:
            record["seconds"] = round(record["ended"] - record["started"], 3)
    record["iteration"] = latest_iteration(job)
    try:
        done = completed(job)
    except Exception:  # a record the job left unusable: its own error says why
        done = False
    if done and record["exit"] in (None, 0):
        record["status"] = "done"
    elif record["exit"] not in (None, 0, 130, 143):
        record["status"] = "failed"
    else:
        record["status"] = "incomplete"


def write_index(base: Path, jobs: list[Job], launcher: str, group: str | None) -> Path:
    keys = sorted(jobs[0].record["differences"]) if jobs else []
    index = {"format": FORMAT, "sweep": Path(base).name, "launcher": launcher, "wandb_group": group, "differ": keys,
             "jobs": [job.record for job in jobs]}
    path = Path(base) / INDEX
    rundir.write_atomic(path, json.dumps(index, indent=1) + "\n")
    return path
