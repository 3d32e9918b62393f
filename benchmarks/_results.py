"""Where a benchmark's JSON goes: never over an existing record (results are kept, a new run gets a new name),
checked before any measurement, written atomically (temporary file + rename)."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path


def check_out(path: str | None) -> None:
    """Exit with one line, before any compute, if ``path`` (``--out``) already holds a result."""
    if path is not None and Path(path).exists():
        sys.exit(f"--out: {path} exists; benchmark records are never overwritten, choose a new file name")


def write_result(path: str | None, data: dict) -> None:
    if path is None:
        return
    check_out(path)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, target)
    print("wrote", path)
