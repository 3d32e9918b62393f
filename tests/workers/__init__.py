"""Worker scripts that tests launch as several processes, and the one way they are launched."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def torchrun_workers(worker: str, *args: str, nproc: int = 2, timeout: float = 300) -> None:
    """Run ``tests/workers/<worker>`` as ``nproc`` processes of one standalone torchrun job (the path a
    ``torchrun --nproc_per_node`` launch takes); a failed job fails the test with the tail of its stderr."""
    torchrun = Path(sys.executable).parent / "torchrun"
    result = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", str(nproc),
                             str(ROOT / "tests" / "workers" / worker), *args],
                            env=ENV, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-2000:]
