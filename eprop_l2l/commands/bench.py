"""``eprop-l2l bench``: a benchmark script of the source checkout's ``benchmarks/``, as ``python benchmarks/X.py``
would run it."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from ..runs.rundir import RunError

BENCHMARKS = {"meta": "bench_meta_iteration.py", "trial": "bench_eprop_trial.py",
              "distributed": "bench_distributed.py", "roofline": "roofline.py", "online": "bench_eprop_online.py",
              "cost": "bench_influence_cost.py"}
ROOT = Path(__file__).resolve().parents[2]  # the source checkout: eprop_l2l/commands/bench.py → the repository


def main(which: str, args: list[str]) -> int:
    script = ROOT / "benchmarks" / BENCHMARKS[which]
    if not script.exists():
        raise RunError(f"bench: {script} not found (benchmarks live in the source checkout)")
    sys.argv = [str(script), *args]
    sys.path.insert(0, str(script.parent))  # as `python benchmarks/X.py` has it: the scripts share _results.py
    runpy.run_path(str(script), run_name="__main__")
    return 0
