"""``eprop-l2l train``: one run, or a multirun (``-m``: one run per combination of the sweep overrides, run by a
Hydra launcher: ``hydra/launcher=basic|joblib|submitit_local|submitit_slurm``), each configuration validated before
the first one starts. What a run directory holds: :mod:`eprop_l2l.runs.training`; a multirun's directory and index:
:mod:`eprop_l2l.runs.sweep`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
import time
from pathlib import Path

from ..config.catalog import check_group_options
from ..config.compose import expand_sweep, load_config, to_config, to_yaml
from ..config.launcher import LOCAL, instantiate_launcher, launcher_name, split_launcher
from ..config.schema import TrainConfig
from ..errors import ConfigError
from ..messages import escape, one_line, os_problem, shown
from ..meta.params import tree_map
from ..runs import distributed, rundir
from ..runs.build import build
from ..runs.evaluation import evaluate_meta, format_table
from ..runs.resources import check_device, check_memory
from ..runs.session import run_session
from ..runs.sweep import Job, check_base, completed, latest_iteration, plan, settle, with_run, write_index
from ..runs.tracking import check_available, start_tracking
from ..runs.training import check_resumable, initial_meta, prepare_run_directory, run_directory, training_fault
from ..runtime import configure_cpu
from .guards import failure, interrupt_on_terminate

SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def main(overrides: list[str], *, multirun: bool = False, show_config: bool = False) -> int:
    """Train the configuration ``overrides`` compose (``multirun``: each job of their sweep, into
    ``run.dir/<index>_<overrides>/``, through the launcher they choose: :func:`sweep`); ``show_config``: print the
    validated compositions instead."""
    launcher_overrides, overrides = split_launcher(overrides) if multirun else ([], list(overrides))
    jobs = expand_sweep(overrides) if multirun else [list(overrides)]
    for job in jobs:
        check_group_options(job)  # an unknown preset or group option names the available ones
    configs = [load_config(job) for job in jobs]  # every job validated before any computation
    if show_config:
        for config in configs:
            build(config)  # the values too, exactly as train checks them
        if multirun:  # the launcher's settings too
            instantiate_launcher(launcher_overrides, jobs[0], SweepJob((), None, os.getcwd(), os.getpid()))
        print("\n---\n".join(to_yaml(c) for c in configs), end="")
        return 0
    if not multirun:
        return train(configs[0])
    return sweep(jobs, configs, launcher_overrides)


@dataclasses.dataclass(frozen=True)
class Prepared:
    """A run checked and built, nothing written yet (:func:`prepare`)."""

    learner: object
    family: object
    training: object
    options: object
    run_dir: Path
    init_meta: dict | None
    world: int
    writer: bool


def prepare(cfg: TrainConfig, *, here: bool = True, busy_ok: bool = False) -> Prepared:
    """Every check of a run before anything is written: the values (sizes bounded), torchrun's variables, the
    run directory's record and the checkpoint it would resume from, the run that ``run.init_from`` names; ``here``:
    also the device and the memory of this machine (a sweep whose launcher runs its jobs elsewhere leaves them to
    the jobs). A run directory another process is writing is refused as in use; ``busy_ok`` (a sweep's check
    before its launch) leaves it, and its record, to the job, which may find it free."""
    world = distributed.world_size_from_env()
    learner, family, training, options = build(cfg, world)  # validates every value, bounds every size
    writer = distributed.check_launch_env() == 0
    if here:
        check_device(cfg)
        check_memory(cfg, family, world)
    check_available(cfg)
    run_dir = run_directory(cfg)
    init_meta = initial_meta(cfg, learner)
    if writer:
        if not (busy_ok and rundir.RunLock.in_use(run_dir)):
            rundir.RunLock.check_free(run_dir)  # one being written is in use (read now, it may look damaged)
            check_resumable(run_dir, cfg)  # refusals before anything is written, lock file included
    return Prepared(learner, family, training, options, run_dir, init_meta, world, writer)


def train(cfg: TrainConfig) -> int:
    """Validate everything (:func:`prepare`) before anything is written; then hold the run directory's lock while
    training writes it. Refusals raise one-line errors (exit 2), faults after the start
    :class:`~eprop_l2l.runs.rundir.RunFault` (exit 1)."""
    p = prepare(cfg)
    lock = None
    if p.writer:
        try:
            lock = rundir.RunLock.acquire(p.run_dir)
        except OSError as err:
            raise rundir.RunDirError(f"run.dir: cannot create the run directory: {os_problem(err)}") from None
    try:
        if p.writer:
            record = check_resumable(p.run_dir, cfg)  # again, now that no other process can change it
            try:
                prepare_run_directory(p.run_dir, cfg, record)
            except OSError as err:
                raise rundir.RunDirError(f"run.dir: cannot write the run directory: {os_problem(err)}") from None
        return _train_locked(cfg, p.learner, p.family, p.training, p.options, p.run_dir, p.init_meta, p.world)
    finally:
        if lock is not None:
            lock.release()


# ------------------------------------------------------------------------------------------------ multirun


@dataclasses.dataclass(frozen=True)
class SweepJob:
    """What a Hydra launcher runs for each job, in the process it starts the job in (pickled there): the job's
    configuration as Hydra composed it, trained into its run directory. It returns the outcome (exit status,
    one-line error, times) instead of raising, so that a failed job leaves the others running."""

    run_dirs: tuple[str, ...]  # of the launched jobs, in the order the launcher numbers them (hydra.job.num)
    group: str | None  # the W&B group of jobs whose configuration names none
    cwd: str  # the directory relative run directories are in
    parent: int  # the sweep's own process (the basic launcher runs the jobs in it)

    def __call__(self, cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig

        started = time.time()
        in_parent = os.getpid() == self.parent
        try:
            if not in_parent:
                os.chdir(self.cwd)
            config = with_run(to_config(cfg), self.run_dirs[HydraConfig.get().job.num], self.group)
            code, error = train(config), None
        except Exception as err:  # every failure becomes the job's one line in the index
            code, error = failure(err)
        if in_parent and code in SIGNAL_EXIT.values():
            raise KeyboardInterrupt  # stopped by Ctrl-C or SIGTERM: the jobs after it do not start
        return {"exit": code, "error": error, "started": started, "ended": time.time()}


def _job_refusal(err: Exception, job: Job, total: int) -> Exception:
    differences = ", ".join(f"{k}={v}" for k, v in job.record["differences"].items())
    where = f"job {job.index} of {total}" + (f": {shown(differences, 120)[1:-1]}" if differences else "")
    if isinstance(err, ConfigError):
        return ConfigError(err.key, f"{err.problem} ({where})")
    return type(err)(f"{err} ({where})")


def sweep(jobs: list[list[str]], configs: list[TrainConfig], launcher_overrides: list[str]) -> int:
    """A multirun: every job validated (values, run directory, and — for launchers that run the jobs on this
    machine — device and memory) and the launcher composed before the first job starts; jobs already done are
    skipped, the others handed to the launcher (Hydra's plugin: ``hydra/launcher=...``), which trains or resumes
    each in its own locked run directory. ``index.json`` records every job (:mod:`eprop_l2l.runs.sweep`). Returns
    the largest exit status of the jobs."""
    if len({c.run.dir for c in configs}) > 1:
        raise ConfigError("run.dir", "is the multirun's directory (its runs go into run.dir/<index>_<overrides>/) "
                          "and cannot be swept")
    if not configs[0].run.dir:
        stamp = f"runs/multirun/{time.strftime('%Y%m%d-%H%M%S')}"
        jobs = [[*job, f"run.dir={stamp}"] for job in jobs]
        configs = [dataclasses.replace(c, run=dataclasses.replace(c.run, dir=stamp)) for c in configs]
    base = Path(configs[0].run.dir)
    name = launcher_name(launcher_overrides)
    group = base.resolve().name
    check_base(base)
    planned = plan(base, jobs, configs, group)
    todo = []
    for job in planned:
        try:
            prepare(job.config, here=name in LOCAL, busy_ok=True)
            done = not rundir.RunLock.in_use(job.run_dir) and completed(job)
        except (ConfigError, rundir.RunError) as err:
            raise _job_refusal(err, job, len(planned)) from None
        if done:
            job.record.update(status="skipped", iteration=latest_iteration(job))
        else:
            todo.append(job)
    task = SweepJob(tuple(str(j.run_dir) for j in todo), group, os.getcwd(), os.getpid())
    launcher = instantiate_launcher(launcher_overrides, jobs[0], task)  # its settings checked too
    try:
        lock = rundir.RunLock.acquire(base, "train -m")
    except OSError as err:
        raise rundir.RunDirError(f"run.dir: cannot create the multirun directory: {os_problem(err)}") from None
    try:
        index = write_index(base, planned, name, group)
        print(f"multirun {escape(str(base))}: {len(planned)} jobs ({len(planned) - len(todo)} done before), "
              f"launcher {name}; index: {escape(str(index))}")
        for job in todo:
            print(f"[{job.index + 1}/{len(planned)}] {' '.join(job.overrides)} → {escape(str(job.run_dir))}")
        with interrupt_on_terminate():  # SIGTERM stops the sweep as Ctrl-C does: the index is written on the way out
            _launch(launcher, name, todo, planned)
    finally:
        with contextlib.suppress(OSError):
            write_index(base, planned, name, group)
        lock.release()
    return _report(planned, index)


def _launch(launcher, name: str, todo: list[Job], planned: list[Job]) -> None:
    if not todo:
        return
    outcomes: list[dict | None] = [None] * len(todo)
    try:
        results = launcher.launch([job.overrides for job in todo], initial_job_idx=0)
        for i, result in enumerate(results):
            with contextlib.suppress(Exception):  # a job the launcher lost: its run directory tells
                outcomes[i] = result.return_value
    except Exception as err:  # the launcher itself failed (a worker killed, a job lost by the scheduler)
        for job, outcome in zip(todo, outcomes, strict=True):
            settle(job, outcome)
        finished = sum(job.record["status"] in ("done", "skipped") for job in planned)
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise rundir.RunFault(f"launcher {name}: {shown(detail, 160)}; {finished} of {len(planned)} jobs done: run "
                              "the same command again to finish the sweep (done jobs are skipped, the others "
                              "resume from their checkpoints)") from None
    except BaseException:
        for job in todo:
            settle(job, None)
        raise
    for job, outcome in zip(todo, outcomes, strict=True):
        settle(job, outcome)


def _report(planned: list[Job], index: Path) -> int:
    counts = {s: sum(j.record["status"] == s for j in planned) for s in ("done", "skipped", "failed", "incomplete")}
    print("multirun: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + f"; index: {escape(str(index))}")
    code = 0
    for job in planned:
        record = job.record
        if record["status"] == "failed":
            print(f"eprop-l2l: job {job.index} ({escape(record['run_dir'])}): {one_line(record['error'] or '')}",
                  file=sys.stderr, flush=True)
        code = max(code, record["exit"] or 0)
    return code


def _train_locked(cfg, learner, family, training, options, run_dir: Path, init_meta, world: int) -> int:
    configure_cpu(cfg.run.threads or None)
    ctx = distributed.setup(cfg.distributed.backend, cfg.run.device, cfg.distributed.timeout_s)
    training_learner = dataclasses.replace(learner, task_mean=ctx.task_mean)
    tracker, finished = None, False
    try:
        if ctx.is_writer:
            tracker = start_tracking(cfg, run_dir)
        state, reason = run_session(training_learner, family, training, run_dir, options, ctx.device,
                                    log=tracker.log if tracker else None, shard=ctx.shard, init_meta=init_meta)
        finished = True
    except Exception as err:
        if tracker is not None:
            with contextlib.suppress(Exception):
                tracker.finish()
        fault = training_fault(err, run_dir, cfg, world, "training")
        if fault is None:
            raise
        raise fault from None
    finally:
        try:
            distributed.teardown(wait=finished)
        except RuntimeError as err:
            if finished:
                raise distributed.lost_peer(err, cfg.distributed.timeout_s, "at the end of training") from None
    if not ctx.is_writer:
        return SIGNAL_EXIT.get(reason, 0)
    seconds = sum(r.get("seconds", 0.0) for r in state.history)
    print(f"trained {state.iteration} meta-iterations ({seconds / 60:.1f} min of compute, stopped: {reason}, "
          f"{state.skipped} non-finite steps skipped)")
    evaluated = cfg.run.evaluate and reason in ("done", "time")
    try:
        if evaluated:
            meta = tree_map(lambda v: v.detach(), state.meta)
            summary = evaluate_meta(learner, meta, family, cfg, run_dir,
                                    {"experiment": cfg.experiment, "iterations": state.iteration,
                                     "training_minutes": seconds / 60, "stopped_by": reason,
                                     "cpu_minutes": state.cpu_seconds / 60})
            rundir.record_evaluation(run_dir, state.iteration)
            print(format_table(summary))
            tracker.log_evaluation(summary, [run_dir / "one_shot.png"])
    except Exception as err:
        with contextlib.suppress(Exception):
            tracker.finish()
        fault = training_fault(err, run_dir, cfg, 1, "the end-of-training evaluation")
        if fault is None:
            raise
        raise rundir.RunFault(f"{fault} (training itself finished and is checkpointed: eprop-l2l evaluate "
                              f"{escape(str(run_dir))})") from None
    tracker.finish()
    print(f"run directory: {escape(str(run_dir))}")
    if evaluated:
        print(f"metrics: {escape(str(run_dir / 'metrics.json'))}   figure: {escape(str(run_dir / 'one_shot.png'))}")
    if tracker.directory:
        folder = escape(str(Path(tracker.directory).parent))
        print(f"W&B ({tracker.mode}): {folder}" + (f"   upload with: wandb sync {folder}" if tracker.mode == "offline"
                                                    else ""))
    return SIGNAL_EXIT.get(reason, 0)
