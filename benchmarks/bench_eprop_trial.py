"""Cost of one e-prop trial (forward + ΔW) five ways, for LIF and ALIF at N=400, N_in=10, T=500, B=32:

  naive    textbook per-step update: per-synapse ε, e, ē as fresh [B, N, N] tensors every step
  online   eprop_online: causal per-synapse traces, memory independent of T
  fused    eprop_fused: whole-trial adjoint + one matrix product per weight group
  forward  the plain forward pass (cell + readout), no learning
  bptt     autograd BPTT of the same trial (forward + backward)
  bptt_fast  the same BPTT with the spiking loop's hand-written backward (numerics/fused_loop.py)

Times are medians of ``--repeats`` runs measured in ONE process (so ratios compare like with like), of the
computation only (the inputs are built before the clock starts). Peak memory
is the peak resident set (VmHWM) of a fresh subprocess per case minus that of a subprocess that only builds the
inputs. The memory-vs-T sweep checks that the fused path and its backward (the outer loop's gradient through
ΔW) grow linearly in T.

    python benchmarks/bench_eprop_trial.py [--threads 2] [--repeats 3] [--quick] [--parts] [--out FILE]

``--parts`` also times the stages of the fused trial one by one (the public functions ``eprop_fused`` is made
of), with the number of spikes: what the fused / forward ratio is made of.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _results import check_out, write_result

from eprop_l2l.cells.alif import ALIF
from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.base import Observation, for_readout
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop import eprop_fused, presynaptic, readout_grads
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.numerics.filters import anticausal_filter
from eprop_l2l.numerics.linalg import contract_time
from eprop_l2l.runtime import configure_cpu

CASES = ("naive", "online", "fused", "forward", "bptt", "bptt_fast")


def build(kind: str, n_rec=400, n_in=10, steps=500, batch=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    if kind == "lif":
        cell = LIF(n_in=n_in, n_rec=n_rec, v_th=0.4, n_ref=5, dt_ms=1.0)
    else:
        cell = ALIF(n_in=n_in, n_rec=n_rec, v_th=0.4, n_ref=5, tau_a=200.0, beta=0.07, n_adaptive=n_rec // 4, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(n_rec, 2, dt_ms=1.0))
    params = network.init_params(g)
    params["w_in"] = params["w_in"] * 2.0
    x = (torch.rand(batch, steps, n_in, generator=g) < 0.05).float()
    target = torch.randn(batch, steps, 2, generator=g)
    mask = torch.ones(batch, steps)
    source = Feedback("random", n_rec, 2)
    return network, params, x, target, mask, source, source.init_params(g)


def naive_trial(network, params, x, target, mask, source, source_params):
    """The equations as written: per-synapse eligibility vectors of every step, no factorisation."""
    cell, readout, loss = network.cell, network.readout, Loss()
    b, n = x.shape[0], cell.n_rec
    state = cell.init_state(b)
    y = readout.init_state(b)
    kappa, alpha = readout.kappa, cell.alpha
    is_alif = isinstance(cell, ALIF)
    beta = cell.beta_vector(x) if is_alif else None
    eps_v = {"w_in": torch.zeros(b, n, x.shape[-1]), "w_rec": torch.zeros(b, n, n)}
    eps_a = {k: torch.zeros_like(v) for k, v in eps_v.items()}
    e_bar = {k: torch.zeros_like(v) for k, v in eps_v.items()}
    grads = {k: torch.zeros_like(v[0]) for k, v in eps_v.items()}
    psi_prev = torch.zeros(b, n)
    for t in range(x.shape[1]):
        prev = state
        state, z = cell.step(params, prev, x[:, t])
        y = readout.step(params, y, z)
        signal = source.signal({**params, **source_params}, loss.error(y, target[:, t], mask[:, t]))
        psi = cell.psi(params, state)
        for name, pre in (("w_in", x[:, t]), ("w_rec", prev.z)):
            pre_full = pre.unsqueeze(1).expand(b, n, pre.shape[-1])
            if is_alif:
                decay = (cell.rho - beta * psi_prev).unsqueeze(-1)
                eps_a[name] = psi_prev.unsqueeze(-1) * eps_v[name] + decay * eps_a[name]
            eps_v[name] = alpha * eps_v[name] + pre_full
            e = psi.unsqueeze(-1) * (eps_v[name] - (beta.unsqueeze(-1) * eps_a[name] if is_alif else 0.0))
            e_bar[name] = kappa * e_bar[name] + e
            grads[name] = grads[name] + (signal.unsqueeze(-1) * e_bar[name]).sum(0)
        psi_prev = psi
    return grads


def run_case(case: str, kind: str, steps: int = 500, backward: bool = False):
    return compute(case, build(kind, steps=steps), backward)


def compute(case: str, inputs: tuple, backward: bool = False):
    """One trial of ``case`` on inputs from :func:`build` (what the timings measure: building is excluded)."""
    network, params, x, target, mask, source, source_params = inputs
    params = dict(params)
    if case == "naive":
        with torch.no_grad():
            return naive_trial(network, params, x, target, mask, source, source_params)
    if case == "online":
        with torch.no_grad():
            return eprop_online(network, params, x, target, mask, Loss(), source, source_params=source_params)
    if case == "fused":
        if not backward:
            with torch.no_grad():
                return eprop_fused(network, params, x, target, mask, Loss(), source, source_params=source_params)
        leaves = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        result = eprop_fused(network, leaves, x, target, mask, Loss(), source, source_params=source_params)
        sum(g.square().sum() for g in result.grads.values()).backward()
        return result
    if case == "forward":
        with torch.no_grad():
            return network.run(params, x)
    if case in ("bptt", "bptt_fast"):
        return bptt_grads(network, params, x, target, mask, Loss(), fast=case == "bptt_fast")
    raise ValueError(case)


def fused_parts(inputs: tuple, repeats: int) -> dict:
    """Milliseconds of each stage of one fused trial (no gradient), medians of ``repeats``: the forward pass, the
    learning signals, F_κ^rev, the cell's adjoint (ψ and the reverse α-scan), the event-driven ΔW of ``w_rec``
    and ``w_in``, the readout's delta rule; and the trial's spike count (each spike costs one N-wide row in the
    forward's recurrent input and one in ΔW of ``w_rec``)."""
    network, params, x, target, mask, source, source_params = inputs
    cell, loss, source = network.cell, Loss(), for_readout(source, network.readout)
    samples: dict[str, list[float]] = {}
    clock = [0.0]

    def tick(name, value):
        now = time.perf_counter()
        samples.setdefault(name, []).append(1e3 * (now - clock[0]))
        clock[0] = now
        return value

    for _ in range(repeats + 1):  # the first round warms up
        clock[0] = time.perf_counter()
        with torch.no_grad():
            trajectory, y = tick("forward", network.run(params, x))
            error = loss.error(y, target, mask)
            obs = Observation(error=error, output=y, target=target, spikes=trajectory.outputs, inputs=x)
            signals, _ = tick("learning signals", source.run({**params, **source_params}, obs))
            total = tick("F_kappa^rev", anticausal_filter(signals, network.readout.kappa))
            g = tick("adjoint (psi, alpha-scan)", cell.adjoint(params, trajectory, total))
            tick("dW w_rec (events)", contract_time(g, presynaptic("w_rec", trajectory, x), False))
            tick("dW w_in", contract_time(g, x, False))
            tick("readout delta rule", readout_grads(network.readout, params, trajectory.outputs, error))
    parts = {name: statistics.median(values[1:]) for name, values in samples.items()}
    parts["spikes"] = int(trajectory.outputs.sum())
    return parts


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def high_water_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not available (Linux only)")


def _peak_rss_mb(case: str, kind: str, steps: int, backward: bool) -> float:
    # VmHWM, not ru_maxrss: a child inherits its parent's ru_maxrss across fork/exec, which hides its own peak
    code = (
        "import sys; sys.path.insert(0, 'benchmarks');"
        "from eprop_l2l.runtime import configure_cpu; configure_cpu(1);"
        "import bench_eprop_trial as b;"
        f"b.build({kind!r}, steps={steps});"
        + (f"b.run_case({case!r}, {kind!r}, steps={steps}, backward={backward});" if case != "none" else "")
        + "print(b.high_water_mb())"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def peak_memory_mb(case: str, kind: str, steps: int, backward: bool = False) -> float:
    """Peak resident memory of a fresh process running the case once, minus that of a process that only
    imports and builds the same inputs (MB)."""
    return _peak_rss_mb(case, kind, steps, backward) - _peak_rss_mb("none", kind, steps, backward)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="skip the naive case and the memory sweep")
    parser.add_argument("--memory-only", action="store_true", help="only the peak-memory measurements")
    parser.add_argument("--no-memory", action="store_true", help="only the timings")
    parser.add_argument("--parts", action="store_true", help="also time the fused trial's stages one by one")
    parser.add_argument("--out", default=None, help="JSON record (a new file; existing records are kept)")
    args = parser.parse_args()
    check_out(args.out)
    configure_cpu(args.threads)
    results = {"machine": f"{_cpu_name()}, {torch.get_num_threads()} thread(s)",
               "torch": torch.__version__, "shape": "N=400, N_in=10, T=500, B=32", "time_s": {}, "memory_mb": {}}
    for kind in ("lif", "alif"):
        times = {}
        for case in () if args.memory_only else CASES:
            if args.quick and case == "naive":
                continue
            inputs = build(kind)
            compute(case, build(kind, steps=50))  # warm-up
            samples = []
            for _ in range(1 if case == "naive" else args.repeats):
                start = time.perf_counter()
                compute(case, inputs)
                samples.append(time.perf_counter() - start)
            times[case] = statistics.median(samples)
            print(f"{kind:5s} {case:8s} {times[case]:8.3f} s", flush=True)
        if times:
            results["time_s"][kind] = times
        if args.parts:
            parts = fused_parts(build(kind), args.repeats)
            results.setdefault("fused_parts_ms", {})[kind] = parts
            stages = sum(v for k, v in parts.items() if k != "spikes")
            print(f"{kind}: fused stages (ms) " + ", ".join(f"{k} {v:.1f}" for k, v in parts.items() if k != "spikes")
                  + f"; sum {stages:.1f} = {stages / parts['forward']:.2f} x forward; {parts['spikes']} spikes",
                  flush=True)
        if "naive" in times:
            print(f"{kind}: fused is {times['naive'] / times['fused']:.1f}x faster than naive;"
                  f" fused / forward = {times['fused'] / times['forward']:.2f};"
                  f" online / forward = {times['online'] / times['forward']:.2f};"
                  f" bptt / forward = {times['bptt'] / times['forward']:.2f};"
                  f" fast-loop bptt / forward = {times['bptt_fast'] / times['forward']:.2f}")
        if not (args.quick or args.no_memory):
            memory = {}
            for case in CASES:
                memory[case] = peak_memory_mb(case, kind, 500)
            for steps in (250, 500, 1000, 2000):
                memory[f"fused_T{steps}"] = peak_memory_mb("fused", kind, steps)
                memory[f"fused_backward_T{steps}"] = peak_memory_mb("fused", kind, steps, backward=True)
            results["memory_mb"][kind] = memory
            print(kind, "peak MB", {k: round(v, 1) for k, v in memory.items()}, flush=True)
    write_result(args.out, results)


if __name__ == "__main__":
    main()
