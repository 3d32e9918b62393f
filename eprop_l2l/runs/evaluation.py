"""A trained run's evaluation: where its checkpoint is (:func:`locate`), what evaluating it with overrides
needs (:func:`evaluation_setup`), where the results go (:func:`evaluation_directory`: never over the training's
own outputs or an earlier evaluation), the evaluation itself (:func:`evaluate_meta`) and its table
(:func:`format_table`). ``eprop-l2l evaluate`` (:mod:`eprop_l2l.commands.evaluate`), ``export``, the Python API
and the scripts share them.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path

import torch
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from ..config.compose import to_config
from ..config.schema import TrainConfig
from ..errors import ConfigError
from ..information import describe as describe_information
from ..meta.evaluate import evaluate_one_shot, write_evaluation
from ..meta.params import LOG_INNER_LR, flat, nested, tree_map
from .build import build
from .checkpoint import CheckpointError, check_compatible, latest_checkpoint, load_checkpoint, meta_tree
from .resources import check_device
from .rundir import MANIFEST, config_as_recorded, read_manifest

CONFIG_FILE = "config.yaml"
# the printed rows, where the family scores them (the Scorbot adds the paper's units)
TABLE_ROWS = (("end-effector dev. (cm)", "deviation_cm"), ("ω RMSE base (rad/s)", "omega_rmse_base"),
              ("ω RMSE shoulder (rad/s)", "omega_rmse_shoulder"), ("MSE_cart", "mse_cart"),
              ("MSE_motor (rad/s)²", "mse_motor"), ("RMS hand error", "hand_rmse"))


def format_table(summary: dict) -> str:
    """The evaluation's table: the metrics before and after the update, mean ± sd over the held-out tasks, and
    again over each subset the family names (``n_tasks_<name>``, :mod:`eprop_l2l.meta.evaluate`)."""
    lines = [f"one-shot learning on {summary['n_tasks']} held-out tasks (seed {summary['seed']}), mean ± sd",
             f"the inner rule was given: {summary.get('information', 'not recorded')}",
             f"{'':24}{'before update':>22}{'after one update':>22}"]
    lines += _rows(summary, "")
    rates = f"firing rates: learning network {summary['rate_network_hz']:.1f} Hz"
    if "rate_module_hz" in summary:
        rates += f", error module {summary['rate_module_hz']:.1f} Hz"
    lines.append(rates)
    for name in (k.removeprefix("n_tasks_") for k in summary if k.startswith("n_tasks_")):
        lines.append(f"{name}: {summary[f'n_tasks_{name}']} of the {summary['n_tasks']} tasks, mean ± sd (median)")
        lines += _rows(summary, f"_{name}", median=True)
    return "\n".join(lines)


def _rows(summary: dict, suffix: str, median: bool = False) -> list[str]:
    lines = []
    for label, key in TABLE_ROWS:
        if f"{key}_after{suffix}" not in summary:
            continue
        cells = [f"{summary[f'{key}_{w}{suffix}']:.4g} ± {summary[f'{key}_{w}{suffix}_sd']:.3g}"
                 + (f" ({summary[f'{key}_{w}{suffix}_median']:.3g})" if median else "") for w in ("before", "after")]
        width = 32 if median else 22
        lines.append(f"{label:24}{cells[0]:>{width}}{cells[1]:>{width}}")
    return lines


def assemble_meta(learner, saved: dict, cfg: TrainConfig, path: Path) -> tuple[dict, list[str]]:
    """The evaluated meta-parameters (a tree): the checkpoint's (``saved``, a tree), with ``eval.reinit`` prefixes
    and parameters the checkpoint lacks (e.g. a feedback matrix when the error module is swapped for e-prop 1)
    taken from the initialisation. Shapes must agree; returns the flat names that were initialised (the names
    ``eval.reinit`` matches: ``meta.params.flat``)."""
    init = flat(learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed)))
    saved = flat(saved)
    reset = [k for k in init if k not in saved or any(k.startswith(p) for p in cfg.eval.reinit)]
    kept = {k: saved[k] for k in init if k not in reset}
    check_compatible(path, nested(kept), nested({k: init[k] for k in kept}))
    return nested({k: (init[k] if k in reset else saved[k]) for k in init}), reset


def evaluate_meta(learner, meta: dict, family, cfg: TrainConfig, out_dir: Path, extra: dict | None = None,
                  progress: bool = False) -> dict:
    summary, per_task, example = evaluate_one_shot(learner, meta, family, cfg.eval.n_tasks, cfg.eval.seed,
                                                   cfg.eval.batch_size, progress=progress,
                                                   example=cfg.eval.figures)
    if LOG_INNER_LR in meta:
        summary["inner_lr"] = float(meta[LOG_INNER_LR].exp())
    summary["information"] = describe_information(learner.information)  # what the inner rule was given
    summary.update(extra or {})
    write_evaluation(out_dir, summary, per_task, example, family)
    return summary


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


def override_slug(overrides: list[str] | tuple[str, ...], limit: int = 120) -> str:
    """The overrides as a readable file name (``a=1+b=2``, other characters as ``_``), cut at ``limit``."""
    return re.sub(r"[^A-Za-z0-9_.=,+-]+", "_", "+".join(overrides))[:limit]


def evaluation_name(overrides: list[str] | tuple[str, ...]) -> str:
    """An evaluation's directory name: the overrides, readable (first 100 characters; ``as_trained`` without
    overrides), then ``-`` and 8 hex digits of the SHA-256 of the exact override list, so lists that share their
    first characters, or differ only where a file name cannot follow them, do not collide."""
    digest = hashlib.sha256("\n".join(overrides).encode()).hexdigest()[:8]
    return f"{override_slug(overrides, 100) or 'as_trained'}-{digest}"


def evaluation_directory(run_dir: Path, overrides: list[str] | tuple[str, ...], out: str | None = None
                         ) -> tuple[Path, str | None]:
    """Where an evaluation writes, created empty: ``out`` (refused unless new or empty), else
    ``run_dir/evaluations/<evaluation_name>`` — or, when that exists, the first free ``<name>_2``, ``_3``, ...
    (returned with a note saying so). Never a directory that holds results, never the run directory itself."""
    if out is not None:
        target = Path(out)
        if target.exists() and (not target.is_dir() or any(target.iterdir())):
            raise ConfigError("--out", f"{target} exists and is not empty: an evaluation never overwrites results; "
                              "choose a new directory")
        target.mkdir(parents=True, exist_ok=True)
        return target, None
    base = run_dir / "evaluations" / evaluation_name(overrides)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(1, 10_000):
        candidate = base if n == 1 else base.with_name(f"{base.name}_{n}")
        try:
            candidate.mkdir()
        except FileExistsError:
            continue
        note = None if n == 1 else f"{base} exists (kept): writing this evaluation to {candidate.name} instead"
        return candidate, note
    raise ConfigError("--out", f"{base}: too many evaluations with these overrides; pass --out")


def evaluation_setup(target: str, overrides: list[str] | tuple[str, ...] = ()):
    """What an evaluation of ``target`` with ``overrides`` (dotted keys onto the stored config) needs:
    ``(cfg, learner, family, meta, initialised, checkpoint, iteration)``; everything validated."""
    run_dir, checkpoint = locate(target)
    stored = run_dir / CONFIG_FILE
    if not stored.exists():
        raise ConfigError(str(stored), "missing: evaluate needs the run directory's config.yaml")
    manifest = read_manifest(run_dir)
    if manifest is not None and not config_as_recorded(run_dir, manifest):  # the run as trained, or nothing
        raise ConfigError(str(stored), f"differs from the one recorded in {MANIFEST} when the run was trained "
                          "(edited or corrupted since); restore it (evaluate takes changes as overrides)")
    try:
        stored_config = OmegaConf.load(stored)
    except Exception as err:  # a damaged YAML file: yaml's own errors, OmegaConf's, decoding errors
        raise ConfigError(str(stored), f"unreadable ({type(err).__name__}); the run directory's record is damaged") \
            from None
    try:
        merged = OmegaConf.merge(stored_config, OmegaConf.from_dotlist(list(overrides)))
    except (OmegaConfBaseException, ValueError) as err:
        raise ConfigError("overrides", str(err).splitlines()[0]) from None
    cfg = to_config(merged)
    learner, family, _, _ = build(cfg)
    if any(o.split("=", 1)[0].lstrip("+") == "run.device" for o in overrides):
        check_device(cfg)  # a device asked for explicitly is used or refused, never replaced
    elif cfg.run.device.startswith("cuda") and not torch.cuda.is_available():
        # the device the run was trained on: a GPU-trained run evaluates on this machine's CPU
        cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, device="cpu"))
    saved = load_checkpoint(checkpoint)
    meta, reset = assemble_meta(learner, meta_tree(saved), cfg, checkpoint)
    meta = tree_map(lambda v: v.to(cfg.run.device), meta)
    return cfg, learner, family, meta, reset, checkpoint, int(saved["iteration"])


def training_compute(run_dir: Path, iteration: int, checkpoint: Path) -> dict:
    """The training's CPU minutes, so that an evaluation's table row states the compute behind it: from the
    training's own evaluation (``metrics.json``) when that was of the same checkpoint, else the budget clock of
    the checkpoint's history (the per-iteration CPU seconds; runs older than the clock have none)."""
    try:
        trained = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        trained = {}
    if trained.get("iterations") == iteration and isinstance(trained.get("cpu_minutes"), int | float):
        return {"cpu_minutes": trained["cpu_minutes"]}
    history = load_checkpoint(checkpoint)["history"]
    if history and all("cpu_seconds" in r for r in history):
        return {"cpu_minutes": sum(r["cpu_seconds"] for r in history) / 60}
    return {}
