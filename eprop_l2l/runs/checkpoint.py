"""Checkpoints of a meta-training run: everything :class:`MetaTrainingState` holds (meta-parameters, Adam and
scheduler state, the task generator's RNG state, iteration and skip counters, history), so that a resumed run
continues bit-identically (CPU).

Written atomically (temporary file in the same directory, fsync, rename; the last ``keep`` are kept), refused
when any meta-parameter is NaN/Inf, read with ``torch.load(weights_only=True)``. Integrity: each checkpoint
carries a SHA-256 ``digest`` of its own contents (checked on every load, also of a file copied out of its run),
and the run's ``manifest.json`` (:mod:`.rundir`) records the SHA-256 of the file, checked whenever a listed
checkpoint is loaded. A missing, truncated, corrupted (even one flipped bit), mistyped or incompatible file
raises :class:`CheckpointError` with a one-line message naming the file.

In memory the meta-parameters are a tree per population (:mod:`eprop_l2l.meta.params`); a checkpoint stores them
by their flat names (``w_in``, ``em_w_in``, ``log_inner_lr``, ...), as every checkpoint has since format 1, and
Adam's state by the position of each parameter in that flat mapping. :func:`state_dict` flattens the tree;
:func:`load_checkpoint` returns the contents as stored, and :func:`meta_tree` and :func:`restore` (with
:func:`_optimizer_in_order`) turn them into the tree.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import torch

from ..messages import shown, shown_path
from ..meta import params as tree
from ..meta.trainer import MetaTraining, MetaTrainingState, start
from . import rundir

FORMAT = 1
PATTERN = "ckpt_{:08d}.pt"
REQUIRED = ("format", "iteration", "skipped", "consecutive_nonfinite", "meta", "optimizer", "scheduler",
            "generator", "history")


class CheckpointError(Exception):
    """A checkpoint that cannot be used; the message is one line naming the file and the problem."""


def _feed(digest, value) -> None:
    """A canonical byte stream of a checkpoint's contents: mappings by sorted key, tensors by dtype, shape and
    bytes, other values by type and ``repr``."""
    if isinstance(value, dict):
        digest.update(b"{%d" % len(value))
        for key in sorted(value, key=repr):
            digest.update(repr(key).encode() + b":")
            _feed(digest, value[key])
        digest.update(b"}")
    elif isinstance(value, list | tuple):
        digest.update(b"[%d" % len(value))
        for item in value:
            _feed(digest, item)
        digest.update(b"]")
    elif isinstance(value, torch.Tensor):
        tensor = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"T{tensor.dtype}{list(value.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes())
    else:
        digest.update(f"{type(value).__name__}:{value!r};".encode())


def content_digest(data: dict) -> str:
    """SHA-256 of everything a checkpoint holds except its ``digest`` field."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in data.items() if k != "digest"})
    return digest.hexdigest()


def state_dict(state: MetaTrainingState, extra: dict | None = None) -> dict:
    return {"format": FORMAT, "iteration": state.iteration, "skipped": state.skipped,
            "consecutive_nonfinite": state.consecutive_nonfinite,
            "meta": {k: v.detach().cpu() for k, v in tree.flat(state.meta).items()},
            "optimizer": state.optimizer.state_dict(), "scheduler": state.scheduler.state_dict(),
            "generator": state.generator.get_state(), "history": list(state.history), "extra": extra or {}}


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(run_dir: str | Path, state: MetaTrainingState, keep: int = 3, extra: dict | None = None,
                    history: dict | None = None) -> Path:
    """Write, rename into place, then list in the manifest (with its SHA-256 and ``history``, the history
    file's record count and checksum as of this checkpoint), then delete checkpoints beyond ``keep``."""
    bad = [k for k, v in tree.flat(state.meta).items() if not bool(torch.isfinite(v.detach()).all())]
    if bad:
        raise CheckpointError(f"refusing to checkpoint iteration {state.iteration}: non-finite meta-parameters "
                              f"{', '.join(bad)}")
    folder = checkpoint_dir(run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PATTERN.format(state.iteration)
    data = state_dict(state, extra)
    data["digest"] = content_digest(data)
    buffer = io.BytesIO()
    torch.save(data, buffer)
    payload = buffer.getvalue()
    rundir.write_atomic(path, payload)
    stale = rundir.record_checkpoint(Path(run_dir), path, hashlib.sha256(payload).hexdigest(), len(payload),
                                     state.iteration, keep, history)
    for old in stale:
        old.unlink(missing_ok=True)
    return path


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first: those its manifest lists (a checkpoint renamed into place
    by a process killed before listing it is ignored), or, in a directory without a manifest (written by an
    earlier version), every ``ckpt_*.pt`` (temporary files of an interrupted write are ignored)."""
    listed = rundir.listed_checkpoints(Path(run_dir)) if Path(run_dir).is_dir() else None
    if listed is not None:
        return listed
    folder = checkpoint_dir(run_dir)
    return sorted(p for p in folder.glob("ckpt_*.pt") if rundir.checkpoint_iteration(p) is not None) \
        if folder.is_dir() else []


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1] if found else None


def _is_count(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# field: (check, what it must be)
FIELDS = {
    "iteration": (_is_count, "a whole number >= 0"),
    "skipped": (_is_count, "a whole number >= 0"),
    "consecutive_nonfinite": (_is_count, "a whole number >= 0"),
    "meta": (lambda v: isinstance(v, dict) and bool(v) and all(isinstance(k, str) and isinstance(t, torch.Tensor)
                                                                and t.is_floating_point() for k, t in v.items()),
             "a non-empty mapping of names to floating-point tensors"),
    "optimizer": (lambda v: isinstance(v, dict) and isinstance(v.get("state"), dict)
                  and isinstance(v.get("param_groups"), list), "an optimizer state (state, param_groups)"),
    "scheduler": (lambda v: isinstance(v, dict), "a scheduler state (mapping)"),
    "generator": (lambda v: isinstance(v, torch.Tensor) and v.dtype == torch.uint8 and v.dim() == 1,
                  "a generator state (1-d uint8 tensor)"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of records"),
    "extra": (lambda v: isinstance(v, dict), "a mapping"),
    "digest": (lambda v: isinstance(v, str), "a hex string"),
}


def _name(path: Path) -> str:
    return shown_path(path)


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, after every integrity check: the manifest's SHA-256 (when the file is listed in
    its run's manifest), readable by ``torch.load(weights_only=True)``, every field present with its type,
    the embedded content digest (when present; checkpoints of earlier versions have none). Its ``meta`` is the
    stored flat mapping (:func:`meta_tree` gives the tree)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {_name(path)}: no such file")
    try:
        recorded = rundir.recorded_sha256(path)
    except rundir.RunDirError as err:
        raise CheckpointError(str(err)) from None
    try:
        if recorded is not None and rundir.sha256_file(path) != recorded:
            raise CheckpointError(f"checkpoint {_name(path)}: SHA-256 differs from the one recorded in "
                                  f"{rundir.MANIFEST} when it was written (corrupted or modified); restore it, or "
                                  "delete it to fall back on the previous checkpoint")
        data = torch.load(path, map_location="cpu", weights_only=True)
    except CheckpointError:
        raise
    except OSError as error:
        raise CheckpointError(f"checkpoint {_name(path)}: cannot be read: {error.strerror or error}") from None
    except (Exception, MemoryError) as error:  # a text file or flipped bits make the unpickler raise anything
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"checkpoint {_name(path)}: unreadable (truncated or corrupted?): "
                              f"{shown(detail, 120)}") from None
    if not isinstance(data, dict) or any(k not in data for k in REQUIRED):
        raise CheckpointError(f"checkpoint {_name(path)}: not an eprop-l2l meta-training checkpoint")
    if data["format"] != FORMAT:
        raise CheckpointError(f"checkpoint {_name(path)}: format {shown(data['format'])} (this version reads "
                              f"{FORMAT})")
    for key, (check, expected) in FIELDS.items():
        if key in data and not check(data[key]):
            raise CheckpointError(f"checkpoint {_name(path)}: field {key!r} is not {expected} (got "
                                  f"{type(data[key]).__name__}): corrupted or not written by eprop-l2l")
    if "digest" in data and content_digest(data) != data["digest"]:
        raise CheckpointError(f"checkpoint {_name(path)}: contents differ from their recorded digest (corrupted "
                              "or modified); restore it, or use an earlier checkpoint")
    return data


def meta_tree(data: dict) -> dict:
    """The meta-parameter tree of a loaded checkpoint (its flat names, ``meta.params.nested``)."""
    return tree.nested(data["meta"])


def _optimizer_in_order(data: dict, names: list[str]) -> dict:
    """Adam's state, keyed by the position of a parameter in the stored flat mapping, re-keyed to its position
    in ``names`` (the order a resumed optimiser is built in: the configured model's; the same order for every
    checkpoint eprop-l2l wrote, kept exact for any other)."""
    position = {name: i for i, name in enumerate(names)}
    moved = {i: position[name] for i, name in enumerate(data["meta"])}
    optimizer = data["optimizer"]
    return {**optimizer, "state": {moved[i]: value for i, value in optimizer["state"].items()},
            "param_groups": [{**group, "params": sorted(moved[i] for i in group["params"])}
                             for group in optimizer["param_groups"]]}


def check_compatible(path: str | Path, meta: dict, expected: dict) -> None:
    """Every meta-parameter the configured model needs is present with the same shape, and nothing else
    (trees, compared and named by their flat names)."""
    meta, expected = tree.flat(meta), tree.flat(expected)
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
    expected = learner.init_meta_params(torch.Generator().manual_seed(0))
    check_compatible(path, meta_tree(data), expected)
    names = list(tree.flat(expected))  # the tree in the configured model's order, whatever the file's
    state = start(learner, config, tree.nested({name: data["meta"][name] for name in names}), device)
    try:
        state.optimizer.load_state_dict(_optimizer_in_order(data, names))
        state.scheduler.load_state_dict(data["scheduler"])
        state.generator.set_state(data["generator"])
    except (ValueError, KeyError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"checkpoint {path}: optimizer/scheduler/RNG state does not fit: "
                              f"{str(error).splitlines()[0][:160]}") from None
    state.iteration, state.skipped = int(data["iteration"]), int(data["skipped"])
    state.consecutive_nonfinite = int(data["consecutive_nonfinite"])
    state.history = list(data["history"])
    state.cpu_seconds = sum(r.get("cpu_seconds", 0.0) for r in state.history)
    return state


def load_meta(path: str | Path, learner=None) -> dict:
    """The meta-parameter tree of a checkpoint (for evaluation), checked against ``learner`` if given."""
    data = load_checkpoint(path)
    if learner is not None:
        check_compatible(path, meta_tree(data), learner.init_meta_params(torch.Generator().manual_seed(0)))
    return meta_tree(data)
