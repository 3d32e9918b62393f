"""What ``eprop-l2l train`` and ``eprop-l2l evaluate`` do, as functions of a validated configuration.

A run directory holds ``config.yaml`` (the resolved configuration), ``history.jsonl`` (one record per
meta-iteration), ``checkpoints/``, ``wandb/`` (offline W&B run), and the end-of-training evaluation (part of
the training's own output) ``metrics.json``, ``per_task.json`` and ``one_shot.png``. Training an existing run
directory resumes it; its stored model configuration must match. ``evaluate`` never writes over any of these:
each evaluation gets a new directory, ``evaluations/<name>/`` (or ``--out``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import re
import time
from pathlib import Path

import torch

from ..config.compose import config_from_yaml, to_yaml
from ..config.schema import MODEL_SECTIONS, TrainConfig
from ..errors import ConfigError
from ..information import describe as describe_information
from ..messages import escape, os_problem
from ..meta.evaluate import evaluate_one_shot, write_evaluation
from ..meta.params import LOG_INNER_LR, flat, nested, tree_map
from ..runtime import configure_cpu
from . import distributed, rundir
from .build import build
from .checkpoint import CheckpointError, check_compatible, latest_checkpoint, load_checkpoint, meta_tree
from .resources import check_memory
from .session import run_session
from .tracking import RUN_ID_FILE, check_available, start_tracking

CONFIG_FILE = "config.yaml"
# the printed rows, where the family scores them (the Scorbot adds the paper's units)
TABLE_ROWS = (("end-effector dev. (cm)", "deviation_cm"), ("ω RMSE base (rad/s)", "omega_rmse_base"),
              ("ω RMSE shoulder (rad/s)", "omega_rmse_shoulder"), ("MSE_cart", "mse_cart"),
              ("MSE_motor (rad/s)²", "mse_motor"), ("RMS hand error", "hand_rmse"))
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}


def write_atomic(path: Path, text: str) -> None:
    rundir.write_atomic(path, text)  # fsync + rename; no temporary file left behind on failure


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


def check_resumable(run_dir: Path, cfg: TrainConfig) -> rundir.Record:
    """What ``run_dir`` holds (:func:`.rundir.inspect`: incomplete or inconsistent records are refused), and,
    for a run with checkpoints, that it may be continued: only with the same model and optimiser (the iteration
    count, time budget, logging and evaluation may change), and from a checkpoint that passes every integrity
    check (checksum, digest, fields). Reads only; nothing is written."""
    record = rundir.inspect(run_dir)
    if record.state not in ("resume", "adopt"):
        return record
    stored = dataclasses.asdict(config_from_yaml(run_dir / CONFIG_FILE))
    requested = dataclasses.asdict(cfg)
    for config in (stored, requested):
        config["optim"].pop("n_iterations")
    sections = (*MODEL_SECTIONS, "optim")
    diff = _differences({k: stored[k] for k in sections}, {k: requested[k] for k in sections})
    if diff:
        raise ConfigError("run.dir", f"{run_dir} holds a run with another configuration ({'; '.join(diff[:3])}); "
                          "choose another run.dir")
    load_checkpoint(record.latest)  # the checkpoint training would resume from: verified before any write
    return record


def format_table(summary: dict) -> str:
    lines = [f"one-shot learning on {summary['n_tasks']} held-out tasks (seed {summary['seed']}), mean ± sd",
             f"the inner rule was given: {summary.get('information', 'not recorded')}",
             f"{'':24}{'before update':>22}{'after one update':>22}"]
    for label, key in TABLE_ROWS:
        if f"{key}_after" not in summary:
            continue
        cells = [f"{summary[f'{key}_{w}']:.4g} ± {summary[f'{key}_{w}_sd']:.3g}" for w in ("before", "after")]
        lines.append(f"{label:24}{cells[0]:>22}{cells[1]:>22}")
    rates = f"firing rates: learning network {summary['rate_network_hz']:.1f} Hz"
    if "rate_module_hz" in summary:
        rates += f", error module {summary['rate_module_hz']:.1f} Hz"
    lines.append(rates)
    return "\n".join(lines)


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


def initial_meta(cfg: TrainConfig, learner) -> dict | None:
    """``run.init_from``: the meta-parameters of another run's latest checkpoint (or of a checkpoint file) start
    this run, e.g. hardware-aware fine-tuning of a float-trained model; checked against the configured model."""
    if not cfg.run.init_from:
        return None
    _, checkpoint = locate(cfg.run.init_from)
    saved = meta_tree(load_checkpoint(checkpoint))
    check_compatible(checkpoint, saved, learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed)))
    return saved


def _check_device(cfg: TrainConfig) -> None:
    if not cfg.run.device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError("run.device", f"{cfg.run.device!r}: CUDA is not available on this machine")
    index = int(cfg.run.device.split(":")[1]) if ":" in cfg.run.device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError("run.device", f"{cfg.run.device!r}: this machine has {torch.cuda.device_count()} GPUs")


def _prepare(run_dir: Path, cfg: TrainConfig, record: rundir.Record) -> None:
    """Under the lock: leftovers of killed writers removed, the record of a new run (or of a run directory from
    an earlier version) started, ``config.yaml`` written and recorded."""
    rundir.remove_orphans(run_dir)
    manifest = record.manifest
    if record.state == "adopt":
        manifest = rundir.adopt_manifest(run_dir)
        print(f"{escape(str(run_dir))}: a run directory of an earlier version; {len(manifest['checkpoints'])} "
              f"checkpoints recorded in {rundir.MANIFEST} as they are")
    elif record.state in ("new", "started"):
        manifest = rundir.new_manifest()
        (run_dir / RUN_ID_FILE).unlink(missing_ok=True)  # nothing durable before: a fresh W&B run
    rundir.write_config(run_dir, manifest, to_yaml(cfg))


def _resume_hint(run_dir: Path) -> str:
    try:
        latest = latest_checkpoint(run_dir)
    except (OSError, rundir.RunError, CheckpointError):
        latest = None
    if latest is None:
        return "no checkpoint was written"
    return f"the checkpoints up to iteration {rundir.checkpoint_iteration(latest)} are intact: rerun the same " \
           "command to resume"


def _fault(err: BaseException, run_dir: Path, cfg: TrainConfig, world: int, doing: str) -> Exception | None:
    """A fault during training or its evaluation as one line (None: not a fault this maps)."""
    from ..meta.trainer import NonFiniteError

    if isinstance(err, NonFiniteError | ConfigError | CheckpointError):
        return None  # already one line, with their own exit codes
    text = str(err)
    if isinstance(err, OSError):
        return rundir.RunFault(f"{doing}: {os_problem(err)}; {_resume_hint(run_dir)}")
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or (
            isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())):
        return rundir.RunFault(f"{doing}: out of memory on {cfg.run.device}; lower optim.batch_size, model.n_rec or "
                               f"task.n_steps ({_resume_hint(run_dir)})")
    backend_words = ("gloo", "nccl", "c10d", "connection", "timed out")
    if world > 1 and (isinstance(err, getattr(torch.distributed, "DistError", ())) or (
            isinstance(err, RuntimeError) and any(word in text.lower() for word in backend_words))):
        # a peer died, hung past distributed.timeout_s, ...
        fault = distributed.lost_peer(err, cfg.distributed.timeout_s, doing)
        return rundir.RunFault(f"{fault}; {_resume_hint(run_dir)}")
    return None


def train(cfg: TrainConfig) -> int:
    """Validate everything (values, sizes against this machine's memory, torchrun's variables, the run
    directory's record, the checkpoint to resume from) before anything is written; then hold the run
    directory's lock while training writes it. Refusals raise one-line errors (exit 2), faults after the start
    :class:`~.rundir.RunFault` (exit 1)."""
    world = distributed.world_size_from_env()
    learner, family, training, options = build(cfg, world)  # validates every value, bounds every size
    writer = distributed.check_launch_env() == 0
    _check_device(cfg)
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
                _prepare(run_dir, cfg, record)
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
        fault = _fault(err, run_dir, cfg, world, "training")
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
        fault = _fault(err, run_dir, cfg, 1, "the end-of-training evaluation")
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
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from ..config.compose import to_config

    run_dir, checkpoint = locate(target)
    stored = run_dir / CONFIG_FILE
    if not stored.exists():
        raise ConfigError(str(stored), "missing: evaluate needs the run directory's config.yaml")
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
        _check_device(cfg)  # a device asked for explicitly is used or refused, never replaced
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


def evaluate(target: str, overrides: list[str], out: str | None = None) -> int:
    """One-shot evaluation of a run directory's latest checkpoint (or a checkpoint file) into
    ``RUN/evaluations/<name>/`` or ``out``: never over the training's own outputs or an earlier evaluation.
    ``metrics.json`` carries the provenance (checkpoint, iteration, training device and seed, overrides)."""
    from .. import __version__

    cfg, learner, family, meta, reset, checkpoint, iteration = evaluation_setup(target, overrides)
    configure_cpu(cfg.run.threads or None)
    run_dir = locate(target)[0]
    trained = config_from_yaml(run_dir / CONFIG_FILE)
    out_dir, note = evaluation_directory(run_dir, overrides, out)
    print(f"evaluating {checkpoint} (iteration {iteration}, trained on {trained.run.device}) on {cfg.run.device}: "
          f"{cfg.eval.n_tasks} held-out tasks (seed {cfg.eval.seed}) → {out_dir}", flush=True)
    if note:
        print(note, flush=True)
    provenance = {"run": str(run_dir), "checkpoint": str(checkpoint), "iterations": iteration,
                  "experiment": trained.experiment, "trained_on": trained.run.device,
                  "training_seed": trained.optim.seed, "evaluated_on": cfg.run.device,
                  "overrides": list(overrides), "initialised": reset, "eprop_l2l_version": __version__,
                  **training_compute(run_dir, iteration, checkpoint)}
    summary = evaluate_meta(learner, meta, family, cfg, out_dir, provenance, progress=cfg.run.progress)
    print(format_table(summary))
    if reset:
        print(f"initialised (not from the checkpoint): {', '.join(reset)}")
    print(f"metrics: {out_dir / 'metrics.json'}" + (f"   figure: {out_dir / 'one_shot.png'}" if cfg.eval.figures
                                                     else ""))
    return 0 if all(math.isfinite(v) for v in summary.values() if isinstance(v, float)) else 1


def export(target: str, out: str, kind: str, force: bool = False, tasks: int = 10, calibration_tasks: int = 10,
           precision: str | None = None) -> Path:
    """``eprop-l2l export``: a run directory's latest checkpoint (or a checkpoint file) as a rule, NIR or Lava
    export (:mod:`eprop_l2l.hardware.export`); returns the directory. Bad input raises a one-line error before
    anything is computed or written."""
    from ..hardware.export import check_request, write_export

    out_dir, precision = check_request(kind, out, force, tasks, calibration_tasks, precision)
    cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(target)
    source = {"checkpoint": str(checkpoint), "iteration": iteration, "experiment": cfg.experiment}
    return write_export(out_dir, kind, precision, learner, meta, family, cfg, source, tasks, calibration_tasks)
