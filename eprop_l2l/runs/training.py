"""A training run's directory before and around training: where it is (:func:`run_directory`), whether it may be
resumed (:func:`check_resumable`) or is done (:func:`is_complete`), the meta-parameters that start it
(:func:`initial_meta`), its record started
under the lock (:func:`prepare_run_directory`), and a fault during training as one line that says what is
intact (:func:`training_fault`). ``eprop-l2l train`` (:mod:`eprop_l2l.commands.train`) runs them in order.

A run directory holds ``config.yaml`` (the resolved configuration), ``history.jsonl`` (one record per
meta-iteration), ``checkpoints/``, ``wandb/`` (offline W&B run), and the end-of-training evaluation (part of
the training's own output) ``metrics.json``, ``per_task.json`` and ``one_shot.png``. Training an existing run
directory resumes it; its stored model configuration must match.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import torch

from ..config.compose import config_from_yaml, to_yaml
from ..config.schema import MODEL_SECTIONS, TrainConfig
from ..errors import ConfigError
from ..messages import escape, os_problem
from . import distributed, rundir
from .checkpoint import CheckpointError, check_compatible, latest_checkpoint, load_checkpoint, meta_tree
from .evaluation import CONFIG_FILE, locate
from .tracking import RUN_ID_FILE


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


def is_complete(record: rundir.Record, cfg: TrainConfig) -> bool:
    """Whether the run directory (as :func:`check_resumable` found it) holds ``cfg``'s run done: trained to
    ``optim.n_iterations`` and, where ``run.evaluate``, evaluated at that iteration. A sweep run again skips it."""
    if record.state != "resume":
        return False
    iteration = rundir.checkpoint_iteration(record.latest)
    if iteration is None or iteration < cfg.optim.n_iterations:
        return False
    evaluation = (record.manifest or {}).get("evaluation") or {}
    return not cfg.run.evaluate or evaluation.get("iteration") == iteration


def initial_meta(cfg: TrainConfig, learner) -> dict | None:
    """``run.init_from``: the meta-parameters of another run's latest checkpoint (or of a checkpoint file) start
    this run, e.g. hardware-aware fine-tuning of a float-trained model; checked against the configured model."""
    if not cfg.run.init_from:
        return None
    _, checkpoint = locate(cfg.run.init_from)
    saved = meta_tree(load_checkpoint(checkpoint))
    check_compatible(checkpoint, saved, learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed)))
    return saved


def prepare_run_directory(run_dir: Path, cfg: TrainConfig, record: rundir.Record) -> None:
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


def resume_hint(run_dir: Path) -> str:
    try:
        latest = latest_checkpoint(run_dir)
    except (OSError, rundir.RunError, CheckpointError):
        latest = None
    if latest is None:
        return "no checkpoint was written"
    return f"the checkpoints up to iteration {rundir.checkpoint_iteration(latest)} are intact: rerun the same " \
           "command to resume"


def training_fault(err: BaseException, run_dir: Path, cfg: TrainConfig, world: int, doing: str) -> Exception | None:
    """A fault during training or its evaluation as one line (None: not a fault this maps)."""
    from ..meta.trainer import NonFiniteError

    if isinstance(err, NonFiniteError | ConfigError | CheckpointError):
        return None  # already one line, with their own exit codes
    text = str(err)
    if isinstance(err, OSError):
        return rundir.RunFault(f"{doing}: {os_problem(err)}; {resume_hint(run_dir)}")
    if isinstance(err, MemoryError | torch.OutOfMemoryError) or (
            isinstance(err, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower())):
        return rundir.RunFault(f"{doing}: out of memory on {cfg.run.device}; lower optim.batch_size, model.n_rec or "
                               f"task.n_steps ({resume_hint(run_dir)})")
    backend_words = ("gloo", "nccl", "c10d", "connection", "timed out")
    if world > 1 and (isinstance(err, getattr(torch.distributed, "DistError", ())) or (
            isinstance(err, RuntimeError) and any(word in text.lower() for word in backend_words))):
        # a peer died, hung past distributed.timeout_s, ...
        fault = distributed.lost_peer(err, cfg.distributed.timeout_s, doing)
        return distributed.LostPeer(f"{fault}; {resume_hint(run_dir)}")
    return None
