"""Checkpoints of a meta-training run: everything :class:`MetaTrainingState` holds (meta-parameters, Adam and
scheduler state, the task generator's RNG state, iteration and skip counters, history), so that a resumed run
continues bit-identically (CPU).

Written atomically (temporary file in the same directory, fsync, rename; the last ``keep`` are kept), refused
when any meta-parameter is NaN/Inf, read with ``torch.load(weights_only=True)``. A missing, truncated,
corrupted or incompatible file raises :class:`CheckpointError` with a one-line message.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from pathlib import Path

import torch

from ..meta.trainer import MetaTraining, MetaTrainingState, start

FORMAT = 1
PATTERN = "ckpt_{:08d}.pt"
REQUIRED = ("format", "iteration", "skipped", "consecutive_nonfinite", "meta", "optimizer", "scheduler",
            "generator", "history")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file and the problem."""


def state_dict(state: MetaTrainingState, extra: dict | None = None) -> dict:
    return {"format": FORMAT, "iteration": state.iteration, "skipped": state.skipped,
            "consecutive_nonfinite": state.consecutive_nonfinite,
            "meta": {k: v.detach().cpu() for k, v in state.meta.items()},
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "generator": state.generator.get_state(), "history": list(state.history), "extra": extra or {}}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, state: MetaTrainingState, keep: int = 3, extra: dict | None = None) -> Path:
    bad = [k for k, v in state.meta.items() if not bool(torch.isfinite(v.detach()).all())]
    if bad:
        raise CheckpointError(f"refusing to checkpoint iteration {state.iteration}: non-finite meta-parameters "
                              f"{', '.join(bad)}")
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PATTERN.format(state.iteration)
    handle = tempfile.NamedTemporaryFile(dir=folder, prefix=".tmp_", suffix=".pt", delete=False)
    try:
        with handle:
            torch.save(state_dict(state, extra), handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first (temporary files of an interrupted write are ignored)."""
    folder = checkpoint_dir(run_dir)
    return sorted(folder.glob("ckpt_*.pt")) if folder.is_dir() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def load_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path}: no such file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, IndexError, KeyError, TypeError, AttributeError,
            zipfile.BadZipFile, pickle.UnpicklingError) as error:  # a text file makes the unpickler raise anything
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {path}: unreadable (truncated or corrupted?): {detail[:160]}") from None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        raise CheckpointError(f"checkpoint {path}: not an eprop-l2l meta-training checkpoint")
    if data["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {path}: format {data['format']} (this version reads {FORMAT})")
    return data


def check_compatible(path: str | Path, meta: dict, expected: dict) -> None:
    """Every meta-parameter the configured model needs is present with the same shape, and nothing else."""
    missing = sorted(set(expected) - set(meta))
    unknown = sorted(set(meta) - set(expected))
    if missing or unknown:
        raise CheckpointError(f"checkpoint {path}: incompatible with the configured model (missing {missing}, "
                              f"unexpected {unknown})")
    for key, value in expected.items():
        if tuple(meta[key].shape) != tuple(value.shape):
            raise CheckpointError(f"checkpoint {path}: incompatible with the configured model: {key} has shape "
                                  f"{list(meta[key].shape)}, the configuration needs {list(value.shape)}")
        if not bool(torch.isfinite(meta[key]).all()):
            raise CheckpointError(f"checkpoint {path}: {key} holds NaN/Inf")


def restore(learner, config: MetaTraining, path: str | Path, device: str | torch.device = "cpu") -> MetaTrainingState:
    """A :class:`MetaTrainingState` exactly as it was saved, on ``device``."""
    data = load_checkpoint(path)
    check_compatible(path, data["meta"], learner.init_meta_params(torch.Generator().manual_seed(0)))
    state = start(learner, config, data["meta"], device)
    try:
        state.optimizer.load_state_dict(data["optimizer"])
        state.scheduler.load_state_dict(data["scheduler"])
        state.generator.set_state(data["generator"])
    except (ValueError, KeyError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: optimizer/scheduler/RNG state does not fit: "
                              f"{str(error).splitlines()[0][:160]}") from None
    state.iteration, state.skipped = int(data["iteration"]), int(data["skipped"])
    state.consecutive_nonfinite = int(data["consecutive_nonfinite"])
    state.history = list(data["history"])
    return state


def load_meta(path: str | Path, learner=None) -> dict:
    """Meta-parameters of a checkpoint (for evaluation), checked against ``learner`` if given."""
    data = load_checkpoint(path)
    if learner is not None:
        check_compatible(path, data["meta"], learner.init_meta_params(torch.Generator().manual_seed(0)))
    return data["meta"]
