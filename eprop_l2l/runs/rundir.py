"""The run directory as a trustworthy record: one writer at a time (an exclusive, non-blocking ``flock`` on
``.lock``), and ``manifest.json``, which ties the record together with SHA-256 checksums:

    {"format": 1,
     "config": {"file": "config.yaml", "sha256": ...},                 # rewritten by every train invocation
     "checkpoints": [{"file": "checkpoints/ckpt_00000100.pt", "iteration": 100, "bytes": ..., "sha256": ...}],
     "history": {"file": "history.jsonl", "records": 100, "sha256": ...},   # as of the latest checkpoint
     "evaluation": {"iteration": 100, "files": {"metrics.json": ..., "per_task.json": ..., "one_shot.png": ...}}}

A checkpoint is renamed into place first and listed in the manifest second; only listed checkpoints are resumed
or evaluated, each verified against its checksum when it is loaded. A checkpoint left unlisted by a process
killed between the two steps is ignored (and later replaced or pruned).

:func:`inspect` reads a directory without writing and classifies it: ``new`` (absent or empty), ``started``
(a configuration but nothing durable: no checkpoint, no evaluation — a new configuration may replace it),
``resume`` (a run with checkpoints), ``adopt`` (a complete run written before manifests existed). Anything
incomplete or inconsistent — ``config.yaml`` missing or changed, a listed checkpoint missing, history or
metrics without checkpoints, an unrelated non-empty directory — is refused with a one-line
:class:`RunDirError` naming the way out; a run is never silently restarted over.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ..messages import shown, shown_path
from ..outputs import Busy, holders, lock_file

MANIFEST = "manifest.json"
LOCK = ".lock"
CONFIG = "config.yaml"
HISTORY = "history.jsonl"
CHECKPOINTS = "checkpoints"
EVALUATION_FILES = ("metrics.json", "per_task.json", "one_shot.png")
RUN_FILES = {MANIFEST, CONFIG, HISTORY, CHECKPOINTS, "wandb", "wandb_run_id", "evaluations", *EVALUATION_FILES}
FORMAT = 1
CHECKPOINT_NAME = re.compile(r"^ckpt_(\d{8,})\.pt$")


class RunError(Exception):
    """A one-line failure of a command; ``code`` is its exit status."""

    code = 2


class RunDirError(RunError):
    """The run directory cannot be used as asked (busy, incomplete, inconsistent): refused, nothing written."""

    code = 2


class RunFault(RunError):
    """A fault stopped a command that had started (disk full, out of memory, a lost peer, ...)."""

    code = 1


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _umask() -> int:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temporary(folder: Path, suffix: str = "") -> tuple[int, str]:
    """A temporary file in ``folder`` (``.tmp_*``) with the permissions a plain ``open`` would give it."""
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp_", suffix=suffix)
    with contextlib.suppress(OSError):
        os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def write_atomic(path: Path, data: str | bytes) -> None:
    """Temporary file in the same directory, fsync, rename: ``path`` is either the old or the new content,
    and a failure (disk full, ...) leaves no temporary file behind."""
    path = Path(path)
    fd, tmp = temporary(path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode() if isinstance(data, str) else data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def remove_orphans(run_dir: Path) -> None:
    """Temporary files of writers that were killed (only called while holding the lock)."""
    for folder in (run_dir, run_dir / CHECKPOINTS):
        if folder.is_dir():
            for tmp in folder.glob(".tmp_*"):
                with contextlib.suppress(OSError):
                    tmp.unlink()


# ------------------------------------------------------------------------------------------------ the lock


class RunLock:
    """Exclusive lock of a run directory for the lifetime of the writing process (released on exit, also on
    ``kill -9``: the kernel drops a flock with its file descriptor). A second writer is refused at once."""

    def __init__(self, run_dir: Path, fd: int):
        self.run_dir, self.fd = run_dir, fd

    @classmethod
    def acquire(cls, run_dir: Path, what: str = "train") -> RunLock:
        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        path = run_dir / LOCK
        try:
            fd = lock_file(path, what)
        except Busy as busy:
            raise _in_use(run_dir, busy) from None
        return cls(run_dir, fd)

    @staticmethod
    def check_free(run_dir: Path) -> None:
        """Refuse, as :meth:`acquire` would, a run directory that another process holds, without taking the lock
        or writing anything: read before the lock is taken, a directory in the middle of a writer's checkpoint
        rotation looks damaged (a recorded checkpoint just removed), and the refusal would blame the wrong thing."""
        if RunLock.in_use(run_dir):
            raise _in_use(run_dir, Busy(holders(Path(run_dir) / LOCK)))

    @staticmethod
    def in_use(run_dir: Path) -> bool:
        """Whether another process (or another open file of this one) holds the run directory's lock."""
        try:
            fd = os.open(Path(run_dir) / LOCK, os.O_RDONLY)
        except OSError:
            return False  # no lock file: nobody has written here (or it is not readable: acquire() will say so)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops a lock taken here
        return False

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)
                os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _in_use(run_dir: Path, busy: Busy) -> RunDirError:
    who = f"process {busy}" if busy.holders else "another process"
    return RunDirError(f"run.dir: {shown_path(run_dir)} is in use by {who} (an eprop-l2l train writing it); "
                       "wait for it to finish, stop it, or choose another run.dir")


# -------------------------------------------------------------------------------------------- the manifest


def checkpoint_iteration(path: Path) -> int | None:
    found = CHECKPOINT_NAME.match(Path(path).name)
    return int(found.group(1)) if found else None


def read_manifest(run_dir: Path) -> dict | None:
    """The manifest, or None when there is none; a damaged one raises :class:`RunDirError`."""
    path = Path(run_dir) / MANIFEST
    if not path.exists():
        return None
    fix = f"delete {shown_path(path)} to re-record the run's files as they are now, or choose another run.dir"
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise RunDirError(f"run.dir: {shown_path(path)} is unreadable ({shown(str(err), 60)}); {fix}") from None
    entries = data.get("checkpoints") if isinstance(data, dict) else None
    if not (isinstance(data, dict) and data.get("format") == FORMAT and isinstance(entries, list)
            and all(isinstance(e, dict) and isinstance(e.get("file"), str) and isinstance(e.get("sha256"), str)
                    and isinstance(e.get("iteration"), int) for e in entries)
            and isinstance(data.get("config"), dict | None)):
        raise RunDirError(f"run.dir: {shown_path(path)} is not an eprop-l2l manifest (format {FORMAT}); {fix}")
    for entry in entries:  # a manifest never points outside its run directory
        if not re.fullmatch(rf"{CHECKPOINTS}/ckpt_\d{{8,}}\.pt", entry["file"]):
            raise RunDirError(f"run.dir: {shown_path(path)} lists {shown(entry['file'])}, not a checkpoint of this "
                              f"run; {fix}")
    return data


def write_manifest(run_dir: Path, data: dict) -> None:
    write_atomic(Path(run_dir) / MANIFEST, json.dumps(data, indent=1, sort_keys=True) + "\n")


def new_manifest() -> dict:
    return {"format": FORMAT, "config": None, "checkpoints": [], "history": None, "evaluation": None}


def listed_checkpoints(run_dir: Path, manifest: dict | None = None) -> list[Path] | None:
    """The manifest's checkpoints, oldest first (None when the directory has no manifest)."""
    manifest = read_manifest(run_dir) if manifest is None else manifest
    if manifest is None:
        return None
    entries = sorted(manifest["checkpoints"], key=lambda e: e["iteration"])
    return [Path(run_dir) / e["file"] for e in entries]


def recorded_sha256(checkpoint: Path) -> str | None:
    """The checksum the run's manifest recorded for ``checkpoint`` (None: no manifest, or not listed)."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name != CHECKPOINTS:
        return None
    run_dir = checkpoint.parent.parent
    manifest = read_manifest(run_dir)
    if manifest is None:
        return None
    for entry in manifest["checkpoints"]:
        if entry["file"] == f"{CHECKPOINTS}/{checkpoint.name}":
            return entry["sha256"]
    return None


def record_checkpoint(run_dir: Path, path: Path, sha: str, size: int, iteration: int, keep: int,
                      history: dict | None = None) -> list[Path]:
    """List a checkpoint that was just renamed into place (and the history as of it); returns the checkpoint
    files to delete (beyond ``keep``, and unlisted leftovers older than it) — delete them after this returns."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir) or adopt_manifest(run_dir, exclude=path)
    name = f"{CHECKPOINTS}/{Path(path).name}"
    entries = [e for e in manifest["checkpoints"] if e["file"] != name]
    entries.append({"file": name, "iteration": int(iteration), "bytes": int(size), "sha256": sha})
    entries.sort(key=lambda e: e["iteration"])
    dropped = entries[:-keep] if keep > 0 else []
    manifest["checkpoints"] = entries[len(dropped):]
    if history is not None:
        manifest["history"] = history
    write_manifest(run_dir, manifest)
    kept = {run_dir / e["file"] for e in manifest["checkpoints"]}
    stale = [run_dir / e["file"] for e in dropped]
    for other in (run_dir / CHECKPOINTS).glob("ckpt_*.pt"):
        number = checkpoint_iteration(other)
        if other not in kept and number is not None and number <= int(iteration):
            stale.append(other)
    return sorted(set(stale))


def adopt_manifest(run_dir: Path, exclude: Path | None = None) -> dict:
    """A manifest for a directory written before manifests existed: its config and checkpoints as they are."""
    run_dir = Path(run_dir)
    manifest = new_manifest()
    if (run_dir / CONFIG).is_file():
        manifest["config"] = {"file": CONFIG, "sha256": sha256_file(run_dir / CONFIG)}
    folder = run_dir / CHECKPOINTS
    for path in sorted(folder.glob("ckpt_*.pt")) if folder.is_dir() else []:
        number = checkpoint_iteration(path)
        if number is None or (exclude is not None and path == Path(exclude)):
            continue
        manifest["checkpoints"].append({"file": f"{CHECKPOINTS}/{path.name}", "iteration": number,
                                        "bytes": path.stat().st_size, "sha256": sha256_file(path)})
    return manifest


def config_as_recorded(run_dir: Path, manifest: dict) -> bool:
    """Whether ``config.yaml`` is the one the manifest records (its checksum, or the previous one after a kill
    between the two steps of :func:`write_config`); true where the manifest records none."""
    recorded = manifest.get("config") or {}
    accepted = {recorded.get("sha256"), recorded.get("previous")} - {None}
    return not accepted or sha256_file(Path(run_dir) / CONFIG) in accepted


def write_config(run_dir: Path, manifest: dict, text: str) -> dict:
    """Replace ``config.yaml`` and record it: the manifest first lists the new checksum (keeping the previous one
    as ``previous``), then the file is replaced, so that a kill between the two leaves a consistent record."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG
    previous = sha256_file(path) if path.is_file() else None
    new = hashlib.sha256(text.encode()).hexdigest()
    manifest["config"] = {"file": CONFIG, "sha256": new, "previous": previous if previous != new else None}
    write_manifest(run_dir, manifest)
    write_atomic(path, text)
    if manifest["config"]["previous"] is not None:
        manifest["config"]["previous"] = None
        write_manifest(run_dir, manifest)
    return manifest


def record_evaluation(run_dir: Path, iteration: int, out_dir: Path | None = None) -> None:
    """Checksums of an evaluation's files (``out_dir``, default: the run directory's own end-of-training
    evaluation) in the run's manifest."""
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    manifest = read_manifest(run_dir)
    if manifest is None:
        return
    files = {str((out_dir / name).relative_to(run_dir)) if out_dir.is_relative_to(run_dir) else str(out_dir / name):
             sha256_file(out_dir / name) for name in EVALUATION_FILES if (out_dir / name).is_file()}
    if out_dir == run_dir:
        manifest["evaluation"] = {"iteration": int(iteration), "files": files}
    else:
        manifest.setdefault("evaluations", {})[str(out_dir.name)] = {"iteration": int(iteration), "files": files}
    write_manifest(run_dir, manifest)


# -------------------------------------------------------------------------------------------- inspection


@dataclass
class Record:
    """What a run directory holds (see the module docstring for the states)."""

    run_dir: Path
    state: str  # new | started | resume | adopt
    manifest: dict | None = None
    checkpoints: list[Path] = field(default_factory=list)

    @property
    def latest(self) -> Path | None:
        return self.checkpoints[-1] if self.checkpoints else None


def _refuse(run_dir: Path, problem: str, fix: str = "restore it or choose another run.dir") -> RunDirError:
    return RunDirError(f"run.dir: {shown_path(run_dir)}: {problem}; {fix}")


def inspect(run_dir: Path) -> Record:
    """Classify ``run_dir`` without writing anything; refuses incomplete or inconsistent records."""
    run_dir = Path(run_dir)
    if not run_dir.exists():
        if run_dir.is_symlink():
            raise _refuse(run_dir, "a dangling symbolic link", "remove it or choose another run.dir")
        return Record(run_dir, "new")
    if not run_dir.is_dir():
        raise RunDirError(f"run.dir: {shown_path(run_dir)} is a file, not a directory; choose another run.dir")
    names = {p.name for p in run_dir.iterdir() if not p.name.startswith(".")}
    if not names:
        return Record(run_dir, "new")
    if not names & RUN_FILES:
        raise RunDirError(f"run.dir: {shown_path(run_dir)} is a non-empty directory that holds no eprop-l2l run "
                          f"({len(names)} entries, e.g. {shown(sorted(names)[0], 40)}); choose a new or empty run.dir")
    config = run_dir / CONFIG
    manifest = read_manifest(run_dir)
    evaluated = [n for n in EVALUATION_FILES if n in names]
    history = run_dir / HISTORY
    has_history = history.is_file() and history.stat().st_size > 0
    if manifest is not None:
        listed = listed_checkpoints(run_dir, manifest)
        if not listed:  # started, killed or failed before its first checkpoint: nothing durable
            if evaluated:
                raise _refuse(run_dir, f"{evaluated[0]} present but no checkpoint recorded in {MANIFEST}")
            return Record(run_dir, "started", manifest)
        if not config.is_file():
            raise _refuse(run_dir, f"{CONFIG} is missing, so the run's record is incomplete "
                          f"({len(listed)} checkpoints recorded)")
        if not config_as_recorded(run_dir, manifest):
            raise _refuse(run_dir, f"{CONFIG} differs from the one recorded in {MANIFEST} (edited or corrupted)",
                          "restore it, or train into another run.dir")
        missing = [p for p in listed if not p.is_file()]
        if missing:
            raise _refuse(run_dir, f"{missing[-1].relative_to(run_dir)} is recorded in {MANIFEST} but missing "
                          f"({len(missing)} of {len(listed)} recorded checkpoints lost)")
        return Record(run_dir, "resume", manifest, listed)
    found = sorted(p for p in (run_dir / CHECKPOINTS).glob("ckpt_*.pt") if checkpoint_iteration(p) is not None) \
        if (run_dir / CHECKPOINTS).is_dir() else []
    if found and not config.is_file():
        raise _refuse(run_dir, f"{CONFIG} is missing but {len(found)} checkpoints are present (the record is "
                      "incomplete: their configuration is unknown)")
    if found:
        return Record(run_dir, "adopt", None, found)
    if has_history or evaluated:
        what = HISTORY if has_history else evaluated[0]
        raise _refuse(run_dir, f"{what} present but no checkpoints (checkpoints/ lost?): continuing would "
                      "replace the run's history and results", f"restore {CHECKPOINTS}/ or choose another run.dir")
    return Record(run_dir, "started")  # a configuration (or less) and nothing durable: may start afresh


def check_path(key: str, value: str) -> None:
    """A path from the configuration that the file system can hold (checked before anything is written)."""
    from ..errors import ConfigError

    if "\x00" in value:
        raise ConfigError(key, f"contains a NUL character: {shown(value)}")
    if len(os.fsencode(value)) > 4000:
        raise ConfigError(key, f"path of {len(os.fsencode(value))} bytes (at most 4000): {shown(value)}")
    for part in Path(value).parts:
        if len(os.fsencode(part)) > 255:
            raise ConfigError(key, f"a name of {len(os.fsencode(part))} bytes in the path (at most 255 per name): "
                              f"{shown(part)}")
