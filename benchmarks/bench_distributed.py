"""Data-parallel meta-training throughput: the same `eprop-l2l train` run (same tasks, same batch) on one
process and on N processes launched by torchrun (gloo, one intra-op thread each), measured as the median
seconds per meta-iteration recorded in history.jsonl after a warm-up (validation iterations excluded).

    python benchmarks/bench_distributed.py --experiment cpu --iterations 40 --nproc 2 [--decompose]

``--decompose`` also times the per-process share of the batch (B/n tasks) in one process alone and in n
independent processes at once (no communication), and splits the speed-up t(B) / t_dp into three factors whose
product it is:

- ``workload``: t(B) / t(B/n), alone — what splitting the batch could give on perfectly independent cores;
- ``contention``: t(B/n, n at once) / t(B/n, alone) — what the machine costs when n processes share it (caches,
  memory bandwidth, the hypervisor's scheduling of its vCPUs);
- ``communication``: t_dp / t(B/n, n at once) — what data parallelism itself costs (the all-reduces, the ranks
  waiting for each other).

Only the last is the data-parallel code's; the first is the workload's, the second the machine's.

``--intra-op`` also times one process with n intra-op threads (``run.threads=n``): the other way to use n cores.
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


def command(nproc: int, args, run_dir: Path, extra: tuple[str, ...] = (), threads: int = 1) -> list[str]:
    overrides = [f"experiment={args.experiment}", f"optim.n_iterations={args.iterations}", "run.evaluate=false",
                 "run.progress=false", "wandb.mode=disabled", f"run.threads={threads}", f"run.dir={run_dir}",
                 f"run.checkpoint_every={args.iterations}", *args.overrides, *extra]
    if nproc == 1:
        return [sys.executable, "-m", "eprop_l2l.cli", "train", *overrides]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    return [torchrun, "--standalone", f"--nproc_per_node={nproc}", "-m", "eprop_l2l.cli", "train", *overrides]


ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def run(nproc: int, args, run_dir: Path, threads: int = 1) -> float:
    env = {**ENV, "OMP_NUM_THREADS": str(threads)}
    subprocess.run(command(nproc, args, run_dir, threads=threads), env=env, check=True, stdout=subprocess.DEVNULL)
    return seconds_per_iteration(run_dir, args.warmup)


def run_at_once(args, run_dirs: list[Path], batch: int) -> float:
    """Independent one-process runs of ``batch`` tasks each, one per run directory, started together: their mean
    seconds per iteration."""
    processes = [subprocess.Popen(command(1, args, d, (f"optim.batch_size={batch}",)), env=ENV,
                                  stdout=subprocess.DEVNULL) for d in run_dirs]
    if any(p.wait() != 0 for p in processes):
        sys.exit("bench_distributed: an independent run failed")
    return statistics.fmean(seconds_per_iteration(d, args.warmup) for d in run_dirs)


def batch_size(args) -> int:
    from eprop_l2l.config.compose import load_config
    return load_config([f"experiment={args.experiment}", *args.overrides]).optim.batch_size


def decompose(args, tmp: Path, one: float, many: float) -> dict:
    share, rest = divmod(batch_size(args), args.nproc)
    if rest:
        sys.exit(f"--decompose: the batch does not split into {args.nproc} equal shares")
    alone = run_at_once(args, [tmp / "share_alone"], share)
    together = run_at_once(args, [tmp / f"share_{k}" for k in range(args.nproc)], share)
    return {"tasks_per_process": share,
            "seconds_per_iteration": {"share_alone": alone, "shares_at_once": together},
            "factors": {"workload": one / alone, "contention": together / alone, "communication": many / together}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="cpu")
    parser.add_argument("--iterations", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--decompose", action="store_true", help="split the speed-up into workload, machine "
                        "contention and communication (module docstring)")
    parser.add_argument("--intra-op", action="store_true", help="also one process with --nproc intra-op threads")
    parser.add_argument("--out", default=None)
    parser.add_argument("overrides", nargs="*", help="further config overrides, e.g. optim.batch_size=32")
    args = parser.parse_args()
    check_out(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        one = run(1, args, Path(tmp) / "one")
        many = run(args.nproc, args, Path(tmp) / "many")
        parts = decompose(args, Path(tmp), one, many) if args.decompose else None
        threaded = run(1, args, Path(tmp) / "threads", threads=args.nproc) if args.intra_op else None
    result = {"experiment": args.experiment, "overrides": args.overrides, "cpu_count": os.cpu_count(),
              "seconds_per_iteration": {"1": one, str(args.nproc): many}, "speedup": one / many}
    if threaded is not None:
        result["intra_op"] = {"threads": args.nproc, "seconds_per_iteration": threaded, "speedup": one / threaded}
    if parts is not None:
        result["decomposition"] = parts
    print(json.dumps(result, indent=2))
    write_result(args.out, result)


if __name__ == "__main__":
    main()
