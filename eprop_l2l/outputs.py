"""Where the commands that write outputs may write: one policy, checked before anything is computed.

* An output folder (``--out`` of ``export``, ``hardware run``, ``table``) must be new or empty. ``--force``
  replaces only an earlier output of the same command, recognised by ``previous(path)``, never anything else.
* It is never a run directory, inside one or over one: a run's checkpoints, config, history and metrics are not
  an output of these commands (``evaluate`` writes beside a run's own files, under ``evaluations/``).
* An output file (``plot --out FILE.png``) never replaces an existing file other than an earlier output of the
  same command, and never a file that a run directory's manifest records.
* The parent must exist and be writable.
* One writer at a time: :func:`claim` holds an exclusive ``flock`` on ``.NAME.lock`` beside the output for the
  whole command (released on exit, also on ``kill -9``: the kernel drops a flock with its file descriptor); a
  second writer of the same ``--out`` is refused at once. Holding it, the command removes the staging folders
  (``.NAME.tmp-XXXXXXXX``) that killed writers of the same output left behind, and nothing else.

Torch-free (standard library only), so that the Lava program, which runs without torch, applies the same policy.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from .errors import ConfigError

RUN_FILES = ("config.yaml", "history.jsonl")  # what every run directory holds from its first iteration on
RUN_MANIFEST = "manifest.json"


class OutputError(ConfigError):
    """An output location the policy refuses; ``str(err)`` is one line naming the option and the path."""


def is_run_directory(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in RUN_FILES)


def enclosing_run(path: Path) -> Path | None:
    """``path`` itself or the nearest folder above it that is a run directory, else None."""
    for folder in (path.resolve(), *path.resolve().parents):
        if is_run_directory(folder):
            return folder
    return None


def _recorded_by_a_run(path: Path) -> bool:
    """Whether the manifest of the run directory ``path`` lies in names it (one of the run's own files)."""
    folder = path.resolve().parent
    if not is_run_directory(folder):
        return False
    try:
        text = (folder / RUN_MANIFEST).read_text()
    except FileNotFoundError:
        return False
    except OSError:
        return True  # an unreadable manifest protects everything beside it
    return json.dumps(path.name) in text


def _writable_parent(key: str, out: Path) -> None:
    parent = out.resolve().parent
    if not parent.is_dir():
        raise OutputError(key, f"parent directory {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise OutputError(key, f"parent directory {parent} is not writable")


def check_output_dir(out: str | Path, key: str = "--out", force: bool = False,
                     previous: Callable[[Path], bool] | None = None) -> Path:
    """``out`` as an output folder of a command whose earlier outputs ``previous`` recognises (None: the command
    has no ``--force``; see the module)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(key, f"{out} is a file, not a directory")
    run = enclosing_run(out)
    if run is not None:
        where = "is a run directory" if run == out.resolve() else f"is inside the run directory {run}"
        raise OutputError(key, f"{out} {where}: outputs go beside a run, never into it")
    if out.is_dir() and any(out.iterdir()):
        if previous is None:  # a command without --force
            raise OutputError(key, f"{out} exists and is not empty: it must be a new or empty directory (nothing "
                              "existing is replaced)")
        if not force:
            raise OutputError(key, f"{out} exists and is not empty (use --force to replace it)")
        if not previous(out):
            raise OutputError(key, f"{out} exists and is not an earlier output of this command: --force replaces "
                              "only those")
    _writable_parent(key, out)
    return out


def check_output_file(out: str | Path, key: str = "--out", previous_name: str | None = None) -> Path:
    """``out`` as an output file: new, or an earlier output of the same command (``previous_name``) that no run
    manifest records."""
    out = Path(out)
    if out.is_dir():
        raise OutputError(key, f"{out} is a directory, not a file")
    if out.exists():
        replaceable = previous_name is not None and out.name == previous_name and not _recorded_by_a_run(out)
        if not replaceable:
            raise OutputError(key, f"{out} exists: nothing existing is replaced (choose a new file)")
    _writable_parent(key, out)
    return out


# ------------------------------------------------------------------------------------------------ one writer


class Busy(Exception):
    """The lock file is held by another process: ``holders`` are their pids (empty when unknown)."""

    def __init__(self, holders: list[int]):
        super().__init__(", ".join(map(str, holders)))
        self.holders = holders


def holders(path: Path) -> list[int]:
    """Processes holding a flock on ``path`` (Linux ``/proc/locks``), else the pid its holder wrote into it."""
    pids = []
    try:
        inode = path.stat().st_ino
        for line in Path("/proc/locks").read_text().splitlines():
            parts = line.split()
            if len(parts) > 5 and parts[1] == "FLOCK" and parts[5].rsplit(":", 1)[-1] == str(inode):
                pids.append(int(parts[4]))
    except (OSError, ValueError):
        pass
    if not pids:
        with contextlib.suppress(OSError, ValueError):
            pids = [int(path.read_text().split()[0])]
    return sorted(set(p for p in pids if p != os.getpid())) or pids


def lock_file(path: Path, what: str) -> int:
    """An exclusive, non-blocking flock on ``path`` (created), which then names this process and ``what`` it
    is; returns the file descriptor (closing it releases the lock), or raises :class:`Busy`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise Busy(holders(Path(path))) from None
    except BaseException:
        os.close(fd)
        raise
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {what}\n".encode(), 0)
    return fd


# mkdtemp's names: PREFIX + 8 characters of [a-z0-9_] (+ a suffix); ``.NAME.tmp-`` is the staging prefix of NAME
_STAGING_TAIL = r"\.tmp-[a-z0-9_]{8}(\.[A-Za-z0-9]+)?"


def staging_prefix(out: Path) -> str:
    """The prefix of the staging folders (or files) of ``out``, created beside it."""
    return f".{Path(out).name}.tmp-"


def _stale_staging(out: Path) -> list[Path]:
    parent = out.resolve().parent
    names = {out.name, out.resolve().name} - {"", ".", ".."}
    pattern = re.compile("|".join(rf"\.{re.escape(n)}{_STAGING_TAIL}" for n in names)) if names else None
    try:
        return sorted(p for p in parent.iterdir() if pattern is not None and pattern.fullmatch(p.name))
    except OSError:
        return []


@contextlib.contextmanager
def claim(out: str | Path, key: str = "--out", what: str = "an eprop-l2l command") -> Iterator[Path]:
    """Hold the lock of the output ``out`` while the block runs (see the module): a second writer is refused in
    one line naming ``key``; stale staging folders of ``out`` are removed. Where the parent is missing or not
    writable nothing is locked: the policy's check inside the block refuses ``out`` in its own words."""
    out = Path(out)
    parent = out.resolve().parent
    name = out.resolve().name
    if not name or not parent.is_dir() or not os.access(parent, os.W_OK):
        yield out
        return
    path = parent / f".{name}.lock"
    while True:
        try:
            fd = lock_file(path, what)
        except Busy as busy:
            who = f"process {busy}" if busy.holders else "another process"
            raise OutputError(key, f"{out} is being written by {who} ({what}); wait for it to finish, stop it, "
                              f"or choose another {key}") from None
        try:  # the lock file may have been removed by the holder that released it: lock the one that is there
            if os.fstat(fd).st_ino == path.stat().st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        for stale in _stale_staging(out):  # every writer of ``out`` holds this lock: these writers are gone
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    stale.unlink()
        yield out
    finally:
        with contextlib.suppress(OSError):
            path.unlink()  # before the release, so that no later writer locks a file that is about to go
        os.close(fd)
