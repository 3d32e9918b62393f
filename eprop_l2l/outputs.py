"""Where the commands that write outputs may write: one policy, checked before anything is computed.

* An output folder (``--out`` of ``export``, ``hardware run``, ``table``) must be new or empty. ``--force``
  replaces only an earlier output of the same command, recognised by ``previous(path)``, never anything else.
* It is never a run directory, inside one or over one: a run's checkpoints, config, history and metrics are not
  an output of these commands (``evaluate`` writes beside a run's own files, under ``evaluations/``).
* An output file (``plot --out FILE.png``) never replaces an existing file other than an earlier output of the
  same command, and never a file that a run directory's manifest records.
* The parent must exist and be writable.

Torch-free (standard library only), so that the Lava program, which runs without torch, applies the same policy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
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
