"""Data-parallel meta-training throughput: the same `eprop-l2l train` run (same tasks, same batch) on one
process and on N processes launched by torchrun (gloo, one intra-op thread each), measured as the median
seconds per meta-iteration recorded in history.jsonl after a warm-up (validation iterations excluded).

    python benchmarks/bench_distributed.py --experiment cpu --iterations 40 --nproc 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _results import check_out, write_result

ROOT = Path(__file__).resolve().parent.parent


def seconds_per_iteration(run_dir: Path, warmup: int) -> float:
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    return statistics.median(r["seconds"] for r in records[warmup:] if not any(k.startswith("val/") for k in r))


def run(nproc: int, args, run_dir: Path) -> float:
    overrides = [f"experiment={args.experiment}", f"optim.n_iterations={args.iterations}", "run.evaluate=false",
                 "run.progress=false", "wandb.mode=disabled", "run.threads=1", f"run.dir={run_dir}",
                 f"run.checkpoint_every={args.iterations}", *args.overrides]
    if nproc == 1:
        command = [sys.executable, "-m", "eprop_l2l.cli", "train", *overrides]
    else:
        torchrun = str(Path(sys.executable).parent / "torchrun")
        command = [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "eprop_l2l.cli", "train", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
    return seconds_per_iteration(run_dir, args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="cpu")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*", help="further config overrides, e.g. optim.batch_size=32")
    args = parser.parse_args()
    check_out(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp) / "one")
        many = run(args.nproc, args, Path(tmp) / "many")
    result = {"experiment": args.experiment, "overrides": args.overrides, "cpu_count": os.cpu_count(),
              "seconds_per_iteration": {"1": one, str(args.nproc): many}, "speedup": one / many}
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
