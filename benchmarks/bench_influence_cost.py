"""Cost per time step against the network size N: exact RTRL, SnAp-2, OSTL (both with the sparse influence storage
of ``inner_loop/influence_blocks.py``), online e-prop and BPTT, at several N in ONE process, with the slope of a
least-squares line through log(cost) against log(N) set beside the order each method is expected to have.

The network: N LIF neurons, each receiving from ``--fan-in`` random others (a fixed fan-in, so the coupling graph
thins as N grows and SnAp-2's kept pairs grow as N·(1 + fan-in)), ``--n-in`` Poisson inputs, two leaky outputs,
B = ``--batch``, T = ``--steps``, float64 (the influence family's reference precision), no regulariser.

* time per step: the median over ``--repeats`` runs of a whole trial divided by T, the cases alternating within
  each repeat (ratios compare like with like on a loaded machine);
* peak memory: the largest growth, during one more trial, of the bytes malloc has handed out (glibc's
  ``mallinfo2``, sampled every 0.2 ms by a second thread: torch releases the GIL inside its operations, and its
  CPU tensors and the native kernels' buffers all come from malloc). Free of the noise of a process's resident
  size and of a profiler's own memory (which grows with every operation recorded: gigabytes for RTRL); a peak
  shorter than the sampling interval can be missed. The inputs and parameters, built before, are not counted;
* influence entries: the numbers the influence matrix holds (RTRL: S·P; SnAp-2 and OSTL: the kept pairs'
  entries, ``influence_blocks.kept_entries``).

    python benchmarks/bench_influence_cost.py [--sizes 32 64 128] [--steps 8] [--cases rtrl snap2 ...] [--out F]
"""

from __future__ import annotations

import argparse
import ctypes
import math
import statistics
import sys
import threading
import time

import torch
from _results import check_out, write_result
from bench_eprop_trial import _cpu_name

from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.influence_blocks import dense_entries, kept_entries
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.rtrl import rtrl_grads
from eprop_l2l.runtime import configure_cpu

CASES = ("rtrl", "snap2", "ostl", "eprop", "bptt")
NAMES = ["w_in", "w_rec", "w_out", "b_out"]
# the order in N of each case's cost per step at a fixed fan-in d, inputs, batch and T (the exponent, and in words)
EXPECTED = {
    "rtrl": {"time": 4, "memory": 3, "time_order": "N⁴ (J·M: S² · P)", "memory_order": "N³ (M: S · P)"},
    "snap2": {"time": 2, "memory": 2, "time_order": "d·N² (kept pairs N(1+d) × N columns)",
              "memory_order": "d·N² (kept pairs × columns)"},
    "ostl": {"time": 2, "memory": 2, "time_order": "N² (N own pairs × N columns)", "memory_order": "N²"},
    "eprop": {"time": 2, "memory": 2, "time_order": "N² (per-synapse update)",
              "memory_order": "N² (ΔW; LIF traces are O(N))"},
    "bptt": {"time": 2, "memory": 2, "time_order": "N² (W^rec·z forward and back)",
             "memory_order": "N² + T·N (ΔW; the recorded trial)"},
}


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                       "fsmblks", "uordblks", "fordblks", "keepcost")]


def _in_use():
    """The bytes malloc has handed out and not taken back (glibc's ``mallinfo2().uordblks``, mapped blocks
    included): torch's CPU tensors, the native kernels' too."""
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _MallInfo2
    return lambda: libc.mallinfo2().uordblks


def peak_bytes(run, interval_s: float = 2e-4) -> int:
    """The largest growth of malloc's bytes in use while ``run()`` runs, above the value at its start, sampled by a
    second thread every ``interval_s`` (torch releases the GIL inside its operations) and once at the end."""
    in_use = _in_use()
    start = in_use()
    peak = [start]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], in_use())
            time.sleep(interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        run()
        peak[0] = max(peak[0], in_use())
    finally:
        done.set()
        sampler.join()
    return max(0, peak[0] - start)


def build(n_rec: int, n_in: int = 8, fan_in: int = 4, batch: int = 1, steps: int = 10, seed: int = 0):
    """Network, parameters (W^rec with a fixed fan-in), one trial and the symmetric feedback, float64."""
    g = torch.Generator().manual_seed(seed)
    cell = LIF(n_in=n_in, n_rec=n_rec, v_th=0.3, n_ref=2, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(n_rec, 2, dt_ms=1.0))
    params = network.init_params(g, torch.float64)
    w_rec = torch.zeros(n_rec, n_rec, dtype=torch.float64)
    for k in range(n_rec):
        sources = [j for j in torch.randperm(n_rec, generator=g).tolist() if j != k][:fan_in]
        w_rec[k, sources] = torch.randn(len(sources), generator=g, dtype=torch.float64) / math.sqrt(fan_in)
    params["w_rec"] = w_rec
    x = (torch.rand(batch, steps, n_in, generator=g) < 0.3).double()
    target = torch.randn(batch, steps, 2, generator=g, dtype=torch.float64)
    mask = torch.ones(batch, steps, dtype=torch.float64)
    return network, params, x, target, mask, Feedback("symmetric", n_rec, 2)


def compute(case: str, inputs: tuple):
    """One trial's gradient of ``case`` on inputs from :func:`build`."""
    network, params, x, target, mask, feedback = inputs
    if case == "rtrl":
        return rtrl_grads(network, params, x, target, mask, Loss())
    if case in ("snap2", "ostl"):
        return rtrl_grads(network, params, x, target, mask, Loss(), order=2 if case == "snap2" else 1,
                          storage="sparse")
    if case == "eprop":
        with torch.no_grad():
            return eprop_online(network, params, x, target, mask, Loss(), feedback)
    if case == "bptt":
        return bptt_grads(network, params, x, target, mask, Loss())
    raise ValueError(case)


def entries(case: str, inputs: tuple) -> int | None:
    """The numbers the case's influence matrix holds (None: it has none)."""
    network, params, x = inputs[:3]
    if case == "rtrl":
        return dense_entries(network, params, NAMES, x.shape[0])
    if case in ("snap2", "ostl"):
        return kept_entries(network, params, NAMES, x.shape[0], 2 if case == "snap2" else 1)
    return None


def peak_mb(case: str, inputs: tuple, trial_s: float) -> float:
    """The peak of one trial; a short trial runs several times under the sampler (about 0.5 s in all, at most
    20), so that its peak is caught however brief."""
    runs = max(1, min(20, int(0.5 / max(trial_s, 1e-6))))
    return max(peak_bytes(lambda: compute(case, inputs)) for _ in range(runs)) / 2**20


def fit_slope(sizes, values) -> float:
    """The slope of the least-squares line through (log N, log value): the fitted order."""
    xs, ys = [math.log(n) for n in sizes], [math.log(v) for v in values]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    return sum((a - mx) * (b - my) for a, b in zip(xs, ys, strict=True)) / sum((a - mx) ** 2 for a in xs)


def summarise(sizes, measured: dict) -> dict:
    """Per case: the measurements in the order of ``sizes``, their fitted slopes and the expected orders."""
    out = {}
    for case, rows in measured.items():
        record = {"time_ms_per_step": rows["time_ms_per_step"], "peak_mb": rows["peak_mb"],
                  "entries": rows["entries"], "slope_time": fit_slope(sizes, rows["time_ms_per_step"]),
                  "slope_memory": fit_slope(sizes, rows["peak_mb"]), "expected": EXPECTED[case]}
        if all(e is not None for e in rows["entries"]):
            record["slope_entries"] = fit_slope(sizes, rows["entries"])
        out[case] = record
    return out


def table(sizes, cases: dict) -> str:
    """The README's table (markdown)."""
    head = " | ".join(f"N = {n}" for n in sizes)
    lines = [f"| method | ms per step, {head} | slope (expected) | peak MB, {head} | slope (expected) |",
             "|---|" + "---|" * (2 * len(sizes) + 2)]
    for case, r in cases.items():
        e = r["expected"]
        lines.append(f"| {case} | " + " | ".join(f"{v:.3g}" for v in r["time_ms_per_step"])
                     + f" | {r['slope_time']:.2f} ({e['time']}) | "
                     + " | ".join(f"{v:.3g}" for v in r["peak_mb"]) + f" | {r['slope_memory']:.2f} ({e['memory']}) |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--n-in", type=int, default=8)
    parser.add_argument("--fan-in", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None, help="JSON record (a new file; existing records are kept)")
    args = parser.parse_args()
    if len(args.sizes) < 2:
        parser.error("--sizes: at least two sizes to fit a slope")
    check_out(args.out)
    configure_cpu(args.threads)
    measured = {case: {"time_ms_per_step": [], "peak_mb": [], "entries": []} for case in args.cases}
    for n in args.sizes:
        inputs = build(n, args.n_in, args.fan_in, args.batch, args.steps)
        for case in args.cases:  # warm-up: the native build, first calls
            compute(case, build(n, args.n_in, args.fan_in, args.batch, steps=2))
        samples = {case: [] for case in args.cases}
        for _ in range(args.repeats):
            for case in args.cases:
                start = time.perf_counter()
                compute(case, inputs)
                samples[case].append(time.perf_counter() - start)
        for case in args.cases:
            rows = measured[case]
            rows["time_ms_per_step"].append(1000 * statistics.median(samples[case]) / args.steps)
            rows["peak_mb"].append(peak_mb(case, inputs, statistics.median(samples[case])))
            rows["entries"].append(entries(case, inputs))
            print(f"N={n:4d} {case:6s} {rows['time_ms_per_step'][-1]:10.3f} ms/step {rows['peak_mb'][-1]:10.3f} MB "
                  f"entries {rows['entries'][-1]}", flush=True)
    cases = summarise(args.sizes, measured)
    print(table(args.sizes, cases))
    results = {"machine": f"{_cpu_name()}, {torch.get_num_threads()} thread(s)", "torch": torch.__version__,
               "shape": f"LIF, fan-in {args.fan_in}, N_in={args.n_in}, n_out=2, B={args.batch}, T={args.steps}, "
                        "float64", "sizes": args.sizes, "repeats": args.repeats,
               "command": "python benchmarks/bench_influence_cost.py " + " ".join(sys.argv[1:]), "cases": cases}
    write_result(args.out, results)


if __name__ == "__main__":
    main()
