"""How far one e-prop 2 meta-iteration is from what this machine can do: a roofline.

For each benchmark size (``bench_meta_iteration.SIZES``) it counts the least work any implementation of the
meta-iteration must do, on the spikes of the measured iteration itself, and sets the measured time against the
lower bound ``max(work / peak arithmetic rate, traffic / memory bandwidth)``, both rates measured here on one
thread by small kernels.

**Work** (multiply-accumulates, MAC). A spike costs one row of its fan-out (an event-driven update, N or M MACs);
a dense product costs all its entries. Per meta-iteration, with B tasks, T steps, learner N, error module M,
spike counts s_x (clock input), c (non-zero entries of the target's population code), s_d / s_t (learner, demonstration
/ test trial) and s_e / s_e' (error module: it runs in the test trial too, for its rate regulariser):

* forward: learner demonstration (s_x + s_d)·N; error module (c + s_x + s_d + s_e)·M; learning signal from the
  module's spikes s_e·N; the update ΔW_in, ΔW_rec as sums of spike-triggered rows (s_x + s_d)·N; test trial
  (s_x + s_t)·N; the module in the test trial (c + s_x + s_t + s_e')·M;
* backward: each recurrence needs its dense transposed product per step, B·T·N² for each learner trial and for
  the gradient of ΔW_rec with respect to the spikes, B·T·M² for each module run, B·T·N·M for the learning
  signal's projection and for each module run's view of the learner's spikes; weight gradients are
  spike-triggered rows again (the forward's events once more).

**Traffic** (float32 bytes). Every [B, T, ·] stream that the backward pass needs is written once and read once:
per learner trial and per module run the spikes and the membrane (ψ follows from it), and the learning signal;
the per-task fast weights [B, N, N] are written by the update, read by the test trial's forward and backward,
and their gradient is written once.

**Rates.** Peak arithmetic: float32 ``torch.mm`` at a size that fills the caches' reuse (the best of several
shapes); an event-driven row update cannot beat it. Bandwidth: ``torch.Tensor.copy_`` of 512 MB (read + write).
The bound is optimistic by construction (no latency, no Python, no pass is ever repeated), so measured / bound
says how much room there is, not that it can all be reached.

    python benchmarks/roofline.py --sizes cpu,mid,paper --repeats 3 --out benchmarks/results/roofline_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from _results import check_out, write_result

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_meta_iteration import SIZES, Case, timed  # noqa: E402

from eprop_l2l.runtime import configure_cpu  # noqa: E402

FLOAT_BYTES = 4
BANDWIDTH_BYTES = 512 * 2**20
# shapes [rows, inner] @ [inner, cols] of the products a meta-iteration runs (B·T rows, N or M wide)
MM_SHAPES = ((8000, 200, 200), (8000, 400, 400), (16000, 300, 400))


def peak_mac_rate(repeats: int = 5) -> float:
    """Multiply-accumulates per second of float32 matrix products on this thread (the best shape)."""
    best = 0.0
    for rows, inner, cols in MM_SHAPES:
        a, b = torch.randn(rows, inner), torch.randn(inner, cols)
        out = torch.empty(rows, cols)
        torch.mm(a, b, out=out)
        seconds = min(timed(lambda a=a, b=b, out=out: torch.mm(a, b, out=out), torch.device("cpu"))
                      for _ in range(repeats))
        best = max(best, rows * inner * cols / seconds)
    return best


def bandwidth(repeats: int = 5) -> float:
    """Bytes per second moved by a large copy (each byte read once and written once)."""
    src = torch.ones(BANDWIDTH_BYTES // FLOAT_BYTES)
    dst = torch.empty_like(src)
    dst.copy_(src)
    seconds = min(timed(lambda: dst.copy_(src), torch.device("cpu")) for _ in range(repeats))
    return 2 * BANDWIDTH_BYTES / seconds


def counts(case: Case) -> dict:
    """The spike and event counts of one meta-iteration at the benchmark's meta-parameters and tasks."""
    with torch.no_grad():
        out = case.learner.forward(case.leaves, case.batch)
    demo, batch = out["demos"][0], case.batch
    (B, T), N, M = batch.inputs.shape[:2], case.learner.network.cell.n_rec, case.learner.error_module.cell.n_rec
    s_e = int(demo.source_trajectory.outputs.sum())
    # the module's test-trial run is internal to the loss: its spikes follow from the reported mean rate of both runs
    module_spikes = float(out["metrics"]["rate_module_hz"]) * case.learner.dt_ms / 1000 * 2 * B * T * M
    return {"B": B, "T": T, "N": N, "M": M, "s_x": int((batch.inputs != 0).sum()), "c": int((batch.context != 0).sum()),
            "s_d": int(demo.trajectory.outputs.sum()), "s_t": int(out["test_trajectory"].outputs.sum()),
            "s_e": s_e, "s_e_test": round(module_spikes) - s_e}


def least_work(k: dict) -> dict:
    """The least multiply-accumulates and bytes of one meta-iteration (module docstring)."""
    B, T, N, M = k["B"], k["T"], k["N"], k["M"]
    s_x, c, s_d, s_t, s_e, s_e_test = (k[key] for key in ("s_x", "c", "s_d", "s_t", "s_e", "s_e_test"))
    events_forward = ((s_x + s_d) * N + (c + s_x + s_d + s_e) * M + s_e * N + (s_x + s_d) * N
                      + (s_x + s_t) * N + (c + s_x + s_t + s_e_test) * M)
    events_backward = events_forward  # each spike-triggered row of the forward has its weight-gradient row
    dense_backward = B * T * (3 * N * N + 2 * M * M + 3 * N * M)
    streams = 2 * 2 * N + 2 * 2 * M + N  # spikes + membrane per learner trial and per module run, the signal
    traffic = FLOAT_BYTES * (2 * B * T * streams + 4 * B * N * N)
    return {"macs_events": events_forward + events_backward, "macs_dense": dense_backward,
            "macs": events_forward + events_backward + dense_backward, "bytes": traffic}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="cpu,mid,paper", help=f"comma-separated, from {', '.join(SIZES)}")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    check_out(args.out)
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    unknown = sorted(set(sizes) - set(SIZES))
    if unknown:
        parser.error(f"--sizes: unknown {unknown}; choose from {', '.join(SIZES)}")
    if args.repeats < 1:
        parser.error("--repeats: must be >= 1")
    configure_cpu(1)
    mac_rate, bytes_rate = peak_mac_rate(), bandwidth()
    print(f"this thread: {mac_rate / 1e9:.1f} GMAC/s (float32 mm), {bytes_rate / 1e9:.1f} GB/s (copy)", flush=True)
    results = []
    for size in sizes:
        case = Case(size, "cpu")
        case.ours()  # warm-up (and the native build, once)
        measured = statistics.median(timed(case.ours, torch.device("cpu")) for _ in range(args.repeats))
        k = counts(case)
        work = least_work(k)
        compute_s, memory_s = work["macs"] / mac_rate, work["bytes"] / bytes_rate
        bound = max(compute_s, memory_s)
        row = {"size": size, "counts": k, "work": work, "compute_bound_s": compute_s, "memory_bound_s": memory_s,
               "lower_bound_s": bound, "bound_by": "compute" if compute_s >= memory_s else "memory",
               "measured_s": measured, "measured_over_bound": measured / bound}
        results.append(row)
        print(f"{size}: {k['N']}/{k['M']} x {k['B']}: {work['macs'] / 1e9:.2f} GMAC "
              f"({work['macs_dense'] / work['macs']:.0%} dense), {work['bytes'] / 1e6:.0f} MB; bound "
              f"{bound * 1e3:.1f} ms ({row['bound_by']}), measured {measured * 1e3:.1f} ms: "
              f"{row['measured_over_bound']:.1f}x", flush=True)
        del case
    write_result(args.out, {"device": "cpu", "threads": 1, "torch": torch.__version__, "repeats": args.repeats,
                            "mac_rate_per_s": mac_rate, "bandwidth_bytes_per_s": bytes_rate,
                            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "results": results})


if __name__ == "__main__":
    main()
