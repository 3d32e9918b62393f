"""``eprop-l2l train``: one run, or a multirun (``-m``: one run per combination of the sweep overrides), each
configuration validated before the first one starts. What a run directory holds: :mod:`eprop_l2l.runs.training`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from pathlib import Path

from ..config.catalog import check_group_options
from ..config.compose import expand_sweep, load_config, to_yaml
from ..config.schema import TrainConfig
from ..messages import escape, os_problem
from ..meta.params import tree_map
from ..runs import distributed, rundir
from ..runs.build import build
from ..runs.evaluation import evaluate_meta, format_table, override_slug
from ..runs.resources import check_device, check_memory
from ..runs.session import run_session
from ..runs.tracking import check_available, start_tracking
from ..runs.training import check_resumable, initial_meta, prepare_run_directory, run_directory, training_fault
from ..runtime import configure_cpu

SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def main(overrides: list[str], *, multirun: bool = False, show_config: bool = False) -> int:
    """Train the configuration ``overrides`` compose (``multirun``: each job of their sweep, into
    ``run.dir/<index>_<overrides>/``); ``show_config``: print the validated compositions instead."""
    jobs = expand_sweep(overrides) if multirun else [list(overrides)]
    for job in jobs:
        check_group_options(job)  # an unknown preset or group option names the available ones
    configs = [load_config(job) for job in jobs]  # every job validated before any computation
    if show_config:
        for config in configs:
            build(config)  # the values too, exactly as train checks them
        print("\n---\n".join(to_yaml(c) for c in configs), end="")
        return 0
    if len(configs) == 1:
        return train(configs[0])
    base = Path(configs[0].run.dir or f"runs/multirun/{time.strftime('%Y%m%d-%H%M%S')}")
    code = 0
    for index, (job, cfg) in enumerate(zip(jobs, configs, strict=True)):
        run_dir = base / f"{index}_{override_slug([o for o in job if not o.startswith('run.dir=')])}"
        print(f"[{index + 1}/{len(jobs)}] {' '.join(job)} → {run_dir}")
        code = max(code, train(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, dir=str(run_dir)))))
    return code


def train(cfg: TrainConfig) -> int:
    """Validate everything (values, sizes against this machine's memory, torchrun's variables, the run
    directory's record, the checkpoint to resume from) before anything is written; then hold the run
    directory's lock while training writes it. Refusals raise one-line errors (exit 2), faults after the start
    :class:`~eprop_l2l.runs.rundir.RunFault` (exit 1)."""
    world = distributed.world_size_from_env()
    learner, family, training, options = build(cfg, world)  # validates every value, bounds every size
    writer = distributed.check_launch_env() == 0
    check_device(cfg)
    check_memory(cfg, family, world)
    check_available(cfg)
    run_dir = run_directory(cfg)
    init_meta = initial_meta(cfg, learner)
    lock = None
    if writer:
        check_resumable(run_dir, cfg)  # refusals before anything is written, lock file included
        try:
            lock = rundir.RunLock.acquire(run_dir)
        except OSError as err:
            raise rundir.RunDirError(f"run.dir: cannot create the run directory: {os_problem(err)}") from None
    try:
        if writer:
            record = check_resumable(run_dir, cfg)  # again, now that no other process can change it
            try:
                prepare_run_directory(run_dir, cfg, record)
            except OSError as err:
                raise rundir.RunDirError(f"run.dir: cannot write the run directory: {os_problem(err)}") from None
        return _train_locked(cfg, learner, family, training, options, run_dir, init_meta, world)
    finally:
        if lock is not None:
            lock.release()


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
