"""What ``eprop-l2l train`` and ``eprop-l2l evaluate`` do, as functions of a validated configuration.

A run directory holds ``config.yaml`` (the resolved configuration), ``history.jsonl`` (one record per
meta-iteration), ``checkpoints/``, ``wandb/`` (offline W&B run), and after evaluation ``metrics.json``,
``per_task.json`` and ``one_shot.png``. Training an existing run directory resumes it; its stored model
configuration must match.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tempfile
import time
from pathlib import Path

import torch

from ..errors import ConfigError
from ..meta.evaluate import evaluate_one_shot, write_evaluation
from ..runtime import configure_cpu
from . import distributed
from .build import build
from .checkpoint import CheckpointError, check_compatible, latest_checkpoint, load_checkpoint
from .compose import config_from_yaml, to_yaml
from .config import MODEL_SECTIONS, TrainConfig
from .session import run_session
from .tracking import start_tracking

CONFIG_FILE = "config.yaml"
TABLE_ROWS = (("MSE_cart", "mse_cart"), ("MSE_motor (rad/s)²", "mse_motor"), ("RMS hand error", "hand_rmse"))
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def write_atomic(path: Path, text: str) -> None:
    handle = tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp_", delete=False)
    with handle:
        handle.write(text)
    os.replace(handle.name, path)


def run_directory(cfg: TrainConfig) -> Path:
    if cfg.run.dir:
        return Path(cfg.run.dir)
    return Path("runs") / cfg.experiment / time.strftime("%Y%m%d-%H%M%S")


def _differences(stored: dict, requested: dict, prefix: str = "") -> list[str]:
    found = []
    for key in sorted(set(stored) | set(requested)):
        a, b = stored.get(key), requested.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            found.append(f"{prefix}{key} {a!r} → {b!r}")
    return found


def check_resumable(run_dir: Path, cfg: TrainConfig) -> None:
    """A run directory that already holds a run may only be continued with the same model and optimiser
    (the iteration count, time budget, logging and evaluation may change)."""
    stored_file = run_dir / CONFIG_FILE
    if not stored_file.exists():
        return
    stored = dataclasses.asdict(config_from_yaml(stored_file))
    requested = dataclasses.asdict(cfg)
    for record in (stored, requested):
        record["optim"].pop("n_iterations")
    sections = (*MODEL_SECTIONS, "optim")
    diff = _differences({k: stored[k] for k in sections}, {k: requested[k] for k in sections})
    if diff:
        raise ConfigError("run.dir", f"{run_dir} holds a run with another configuration ({'; '.join(diff[:3])}); "
                          "choose another run.dir")


def format_table(summary: dict) -> str:
    lines = [f"one-shot learning on {summary['n_tasks']} held-out tasks (seed {summary['seed']}), mean ± sd",
             f"{'':22}{'before update':>22}{'after one update':>22}"]
    for label, key in TABLE_ROWS:
        cells = [f"{summary[f'{key}_{w}']:.4g} ± {summary[f'{key}_{w}_sd']:.3g}" for w in ("before", "after")]
        lines.append(f"{label:22}{cells[0]:>22}{cells[1]:>22}")
    rates = f"firing rates: learning network {summary['rate_network_hz']:.1f} Hz"
    if "rate_module_hz" in summary:
        rates += f", error module {summary['rate_module_hz']:.1f} Hz"
    lines.append(rates)
    return "\n".join(lines)


def assemble_meta(learner, saved: dict, cfg: TrainConfig, path: Path) -> tuple[dict, list[str]]:
    """The evaluated meta-parameters: the checkpoint's, with ``eval.reinit`` prefixes and parameters the
    checkpoint lacks (e.g. a feedback matrix when the error module is swapped for e-prop 1) taken from the
    initialisation. Shapes must agree; returns the names that were initialised."""
    init = learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed))
    reset = [k for k in init if k not in saved or any(k.startswith(p) for p in cfg.eval.reinit)]
    kept = {k: saved[k] for k in init if k not in reset}
    check_compatible(path, kept, {k: init[k] for k in kept})
    return {k: (init[k] if k in reset else saved[k]) for k in init}, reset


def evaluate_meta(learner, meta: dict, family, cfg: TrainConfig, out_dir: Path, extra: dict | None = None) -> dict:
    summary, per_task, example = evaluate_one_shot(learner, meta, family, cfg.eval.n_tasks, cfg.eval.seed,
                                                   cfg.eval.batch_size)
    if "log_inner_lr" in meta:
        summary["inner_lr"] = float(meta["log_inner_lr"].exp())
    summary.update(extra or {})
    write_evaluation(out_dir, summary, per_task, example if cfg.eval.figures else None)
    return summary


def initial_meta(cfg: TrainConfig, learner) -> dict | None:
    """``run.init_from``: the meta-parameters of another run's latest checkpoint (or of a checkpoint file) start
    this run, e.g. hardware-aware fine-tuning of a float-trained model; checked against the configured model."""
    if not cfg.run.init_from:
        return None
    _, checkpoint = locate(cfg.run.init_from)
    saved = load_checkpoint(checkpoint)["meta"]
    check_compatible(checkpoint, saved, learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed)))
    return saved


def train(cfg: TrainConfig) -> int:
    learner, family, training, options = build(cfg, distributed.world_size_from_env())  # validates everything
    run_dir = run_directory(cfg)
    check_resumable(run_dir, cfg)
    if cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("run.device", f"{cfg.run.device!r}: CUDA is not available on this machine")
    init_meta = initial_meta(cfg, learner)
    configure_cpu(cfg.run.threads or None)
    ctx = distributed.setup(cfg.distributed.backend, cfg.run.device)
    training_learner = dataclasses.replace(learner, task_mean=ctx.task_mean)
    tracker = None
    try:
        if ctx.is_writer:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_atomic(run_dir / CONFIG_FILE, to_yaml(cfg))
            tracker = start_tracking(cfg, run_dir)
        state, reason = run_session(training_learner, family, training, run_dir, options, ctx.device,
                                    log=tracker.log if tracker else None, shard=ctx.shard, init_meta=init_meta)
    finally:
        distributed.teardown()
    if not ctx.is_writer:
        return SIGNAL_EXIT.get(reason, 0)
    seconds = sum(r.get("seconds", 0.0) for r in state.history)
    print(f"trained {state.iteration} meta-iterations ({seconds / 60:.1f} min of compute, stopped: {reason}, "
          f"{state.skipped} non-finite steps skipped)")
    if cfg.run.evaluate and reason in ("done", "time"):
        meta = {k: v.detach() for k, v in state.meta.items()}
        summary = evaluate_meta(learner, meta, family, cfg, run_dir,
                                {"experiment": cfg.experiment, "iterations": state.iteration,
                                 "training_minutes": seconds / 60, "stopped_by": reason})
        print(format_table(summary))
        tracker.log_evaluation(summary, [run_dir / "one_shot.png"])
    tracker.finish()
    print(f"run directory: {run_dir}")
    if cfg.run.evaluate and reason in ("done", "time"):
        print(f"metrics: {run_dir / 'metrics.json'}   figure: {run_dir / 'one_shot.png'}")
    if tracker.directory:
        print(f"W&B ({cfg.wandb.mode}): {Path(tracker.directory).parent}" +
              ("   upload with: wandb sync " + str(Path(tracker.directory).parent) if cfg.wandb.mode == "offline"
               else ""))
    return SIGNAL_EXIT.get(reason, 0)


def locate(target: str) -> tuple[Path, Path]:
    """(run directory, checkpoint) for a run directory (its latest checkpoint) or a checkpoint file."""
    path = Path(target)
    if path.is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise CheckpointError(f"{path}: run directory without checkpoints")
        return path, checkpoint
    if path.is_file():
        return (path.parent.parent if path.parent.name == "checkpoints" else path.parent), path
    raise CheckpointError(f"{path}: no such run directory or checkpoint")


def evaluation_name(overrides: list[str]) -> str:
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", "+".join(overrides))[:120]


def evaluation_setup(target: str, overrides: list[str] | tuple[str, ...] = ()):
    """What an evaluation of ``target`` with ``overrides`` (dotted keys onto the stored config) needs:
    ``(cfg, learner, family, meta, initialised, checkpoint, iteration)``; everything validated."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from .compose import to_config

    run_dir, checkpoint = locate(target)
    stored = run_dir / CONFIG_FILE
    if not stored.exists():
        raise ConfigError(str(stored), "missing: evaluate needs the run directory's config.yaml")
    try:
        merged = OmegaConf.merge(OmegaConf.load(stored), OmegaConf.from_dotlist(list(overrides)))
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError("overrides", str(err).splitlines()[0]) from None
    cfg = to_config(merged)
    learner, family, _, _ = build(cfg)
    if cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="cpu"))
    saved = load_checkpoint(checkpoint)
    meta, reset = assemble_meta(learner, saved["meta"], cfg, checkpoint)
    meta = {k: v.to(cfg.run.device) for k, v in meta.items()}
    return cfg, learner, family, meta, reset, checkpoint, int(saved["iteration"])


def evaluate(target: str, overrides: list[str]) -> int:
    cfg, learner, family, meta, reset, checkpoint, iteration = evaluation_setup(target, overrides)
    configure_cpu(cfg.run.threads or None)
    run_dir = locate(target)[0]
    out_dir = run_dir / "evaluations" / evaluation_name(overrides) if overrides else run_dir
    summary = evaluate_meta(learner, meta, family, cfg, out_dir,
                            {"checkpoint": str(checkpoint), "iterations": iteration,
                             "overrides": list(overrides), "initialised": reset})
    print(format_table(summary))
    if reset:
        print(f"initialised (not from the checkpoint): {', '.join(reset)}")
    print(f"metrics: {out_dir / 'metrics.json'}" + (f"   figure: {out_dir / 'one_shot.png'}" if cfg.eval.figures
                                                     else ""))
    return 0 if all(math.isfinite(v) for v in summary.values() if isinstance(v, float)) else 1
