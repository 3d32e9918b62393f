"""Cost of one e-prop 2 meta-iteration (demonstration trial → e-prop update by the learned error module → test
trial → meta-loss → backward → Adam step) of eprop-l2l against the straightforward port of the recipe
(``straightforward_port.py``: what a performance-minded PyTorch user writes — Python time loop, autograd through
everything, per-task fast weights), same sizes, same tasks, same threads, in one process. Both compute the same
function (``tests/test_port_oracle.py`` holds their losses and gradients equal).

Sizes (learner / error module × tasks): ``cpu`` 100 / 60 × 16, ``mid`` 200 / 150 × 32, ``paper`` 400 / 300 × 100.
Repeats alternate between the two implementations (so that drift of a shared machine hits both alike); the
medians are reported. ``--memory`` adds the peak memory of each case measured in a fresh process (VmHWM after
one iteration minus VmHWM after building the inputs; CUDA: the allocator's peak).

    python benchmarks/bench_meta_iteration.py --sizes cpu,mid,paper --threads 1 --repeats 3 --memory \\
        --out benchmarks/results/meta_iteration_cpu.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _results import check_out, write_result

from eprop_l2l.meta.params import flat, leaves, tree_map

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_eprop_trial import high_water_mb as peak_rss_mb  # noqa: E402
from straightforward_port import StraightforwardPort  # noqa: E402

from eprop_l2l.runs.build import from_experiment  # noqa: E402
from eprop_l2l.runtime import configure_cpu  # noqa: E402

SIZES = {
    "cpu": ("cpu",),
    "mid": ("cpu", "model.n_rec=200", "error_module.n_rec=150", "optim.batch_size=32"),
    "paper": ("paper", "run.device=cpu"),
}


class Case:
    """One size: the tasks, our learner with an Adam optimiser, and the port at the same meta-parameters."""

    def __init__(self, size: str, device: str):
        learner, family, config = from_experiment(*SIZES[size])
        self.learner, self.device = learner, torch.device(device)
        self.batch = family.sample(config.batch_size, torch.Generator().manual_seed(0)).to(device)
        meta = learner.init_meta_params(torch.Generator().manual_seed(0))
        self.leaves = tree_map(lambda v: v.to(device).clone().requires_grad_(), meta)
        self.optimizer = torch.optim.Adam(leaves(self.leaves), lr=config.lr)
        self.port = StraightforwardPort.from_learner(learner, flat(meta), lr=config.lr, device=device)
        b = self.batch
        self.port_inputs = (b.inputs, b.context, b.targets, b.extra["hand"], b.mask)
        self.tasks = b.inputs.shape[0]

    def ours(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        out = self.learner.forward(self.leaves, self.batch)
        out["loss"].backward()
        self.learner.constrain_gradients(self.leaves)
        self.optimizer.step()

    def straightforward(self) -> None:
        self.port.meta_iteration(*self.port_inputs)

    @torch.no_grad()
    def forward_only(self) -> None:
        self.learner.forward(self.leaves, self.batch)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device) -> float:
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def measure_memory(size: str, case: str, device: str, threads: int) -> float:
    """Peak memory (MB) of one iteration of ``case`` in a fresh process."""
    command = [sys.executable, __file__, "--memory-case", case, "--sizes", size, "--device", device,
               "--threads", str(threads)]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(output.strip().splitlines()[-1])["peak_mb"]


def memory_case(size: str, case: str, device: str) -> None:
    bench = Case(size, device)
    fn = {"ours": bench.ours, "port": bench.straightforward}[case]
    if bench.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        base = peak_rss_mb()
        fn()
        peak = peak_rss_mb() - base
    print(json.dumps({"peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="cpu,mid,paper", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--memory", action="store_true", help="also the peak memory of each case (fresh processes)")
    parser.add_argument("--memory-case", choices=["ours", "port"], help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    check_out(args.out)
    configure_cpu(args.threads)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    if args.memory_case:
        memory_case(sizes[0], args.memory_case, args.device)
        return
    device = torch.device(args.device)
    results = []
    for size in sizes:
        bench = Case(size, args.device)
        bench.ours(), bench.straightforward(), bench.forward_only()  # warm-up (and the native build, once)
        samples = {"ours": [], "port": [], "forward": []}
        for _ in range(args.repeats):
            samples["ours"].append(timed(bench.ours, device))
            samples["port"].append(timed(bench.straightforward, device))
            samples["forward"].append(timed(bench.forward_only, device))
        median = {k: statistics.median(v) for k, v in samples.items()}
        cell, module = bench.learner.network.cell, bench.learner.error_module.cell
        row = {"size": size, "learner": cell.n_rec, "error_module": module.n_rec, "tasks": bench.tasks,
               "time_s": median, "samples_s": samples, "port_over_ours": median["port"] / median["ours"],
               "ours_over_forward": median["ours"] / median["forward"]}
        del bench
        if args.memory:
            row["peak_mb"] = {case: measure_memory(size, case, args.device, args.threads) for case in ("ours", "port")}
        results.append(row)
        memory = (f", peak MB ours {row['peak_mb']['ours']:.0f} / port {row['peak_mb']['port']:.0f}"
                  if args.memory else "")
        print(f"{size}: {row['learner']}/{row['error_module']} x {row['tasks']}: ours {median['ours']:.3f} s, "
              f"port {median['port']:.3f} s -> {row['port_over_ours']:.2f}x (forward only {median['forward']:.3f} s)"
              f"{memory}", flush=True)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    report = {"device": device_name, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "repeats": args.repeats, "results": results}
    write_result(args.out, report)


if __name__ == "__main__":
    main()
