"""Online e-prop at native speed: one trial of the sizes of NEST's e-prop sine-wave example (100 inputs, 100 LIF,
one leaky readout, 1,000 steps of 1 ms, random feedback, firing-rate regulariser), at batch 1 and 32, four ways:

  native   eprop_online: causal per-synapse traces, the per-synapse work in the native loop
  python   eprop_online under native.disabled(): the Python loop, one step at a time
  fused    eprop_fused: whole-trial adjoint (memory O(T), not an online method)
  nest     NEST 3.10's eprop_iaf_bsshslm_2020 / eprop_readout_bsshslm_2020 network of its sine-wave example, the
           same sizes, `batch` sequences of one weight update (skipped where NEST is not installed: the `nest`
           extra)

Times are medians of ``--repeats`` runs in ONE process, the cases alternating within each repeat (so ratios
compare like with like on a loaded machine), of the computation only (inputs and the NEST network are built
before the clock starts). ``--threads`` defaults to one. The memory check runs the native online trial at
T = 1,000 and 4,000 in fresh processes: its peak resident memory above that of building the inputs stays the same.

    python benchmarks/bench_eprop_online.py [--repeats 3] [--batches 1 32] [--no-nest] [--no-memory] [--out FILE]
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from _results import check_out, write_result
from bench_eprop_trial import _cpu_name, high_water_mb  # noqa: F401 — the memory subprocess reads it here

from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.numerics import native
from eprop_l2l.runtime import configure_cpu

CASES = ("native", "python", "fused", "nest")
# NEST's sine-wave example: sizes and constants of its network (its neurons take inputs scaled by 1 − α, our "old"
# input scaling; its surrogate is the triangle of height 0.3 / v_th and width v_th, ours)
N_IN, N_REC, STEPS, TAU_MS, V_TH, INPUT_RATE, C_REG, F_TARGET_HZ = 100, 100, 1000, 30.0, 0.03, 0.05, 300.0, 10.0
SINE_PERIODS = (1000, 500, 333, 200)  # steps


def sines(steps: int, generator: torch.Generator) -> torch.Tensor:
    """The target: four sines of the given periods, random amplitudes in [0.5, 2] and phases, starting at 0,
    scaled to a peak of 1."""
    amplitudes = 0.5 + 1.5 * torch.rand(len(SINE_PERIODS), generator=generator, dtype=torch.float64)
    phases = 2 * math.pi * torch.rand(len(SINE_PERIODS), generator=generator, dtype=torch.float64)
    total = torch.zeros(steps, dtype=torch.float64)
    for amplitude, phase, period in zip(amplitudes, phases, SINE_PERIODS, strict=True):
        total += amplitude * torch.sin(torch.linspace(0, 2 * math.pi * (steps // period), steps, dtype=torch.float64)
                                       + phase)
    total -= total[0].clone()
    return total / total.abs().max().clamp_min(1e-6)


def build(batch: int, steps: int = STEPS, seed: int = 0):
    """Network, parameters, one trial (frozen input noise and the sine target, the same in every batch element)
    and the feedback, all float32 as in NEST's example."""
    g = torch.Generator().manual_seed(seed)
    cell = LIF(n_in=N_IN, n_rec=N_REC, tau_m=TAU_MS, v_th=V_TH, n_ref=0, gamma_pd=0.3, input_scaling="old", dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(N_REC, 1, tau_out=TAU_MS, input_scaling="old", dt_ms=1.0))
    params = network.init_params(g)
    x = (torch.rand(1, steps, N_IN, generator=g) < INPUT_RATE).float().repeat(batch, 1, 1)
    target = sines(steps, g).float().reshape(1, steps, 1).repeat(batch, 1, 1)
    mask = torch.ones(batch, steps)
    source = Feedback("random", N_REC, 1)
    regularizer = RateRegularizer(C_REG, F_TARGET_HZ, dt_ms=1.0)
    return network, params, x, target, mask, source, source.init_params(g), regularizer


def compute(case: str, inputs: tuple):
    """One trial of ``case`` (not nest) on inputs from :func:`build`."""
    network, params, x, target, mask, source, source_params, regularizer = inputs
    common = dict(source_params=source_params, regularizer=regularizer)
    with torch.no_grad():
        if case == "native":
            return eprop_online(network, params, x, target, mask, Loss(), source, **common)
        if case == "python":
            with native.disabled():
                return eprop_online(network, params, x, target, mask, Loss(), source, **common)
        if case == "fused":
            return eprop_fused(network, params, x, target, mask, Loss(), source, **common)
    raise ValueError(case)


def nest_module():
    """NEST's Python module, or None (one line) where it is not installed."""
    os.environ.setdefault("PYNEST_QUIET", "1")
    try:
        import nest
    except ImportError:
        print("nest: not installed (pip install -e '.[nest]'); its case is skipped", flush=True)
        return None
    nest.verbosity = nest.VerbosityLevel.WARNING  # no INFO lines per Simulate
    return nest


def nest_build(nest, batch: int, seed: int = 0) -> float:
    """NEST's sine-wave network with one weight update per ``batch`` sequences of STEPS steps, built in a fresh
    kernel on one thread; returns the simulated time in ms (everything up to the last sequence's update)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sequence_ms, offset, delays = float(STEPS), 1.0, 3.0  # generator offset; input→rec, rec→out, out normalisation
    nest.ResetKernel()
    nest.set(resolution=1.0, total_num_virtual_procs=1, print_time=False, eprop_update_interval=sequence_ms,
             eprop_learning_window=sequence_ms, eprop_reset_neurons_on_update=True)
    rec = nest.Create("eprop_iaf_bsshslm_2020", N_REC, {
        "C_m": 1.0, "c_reg": C_REG, "E_L": 0.0, "f_target": F_TARGET_HZ, "I_e": 0.0, "regular_spike_arrival": False,
        "surrogate_gradient_function": "piecewise_linear", "surrogate_gradient_height": 0.3 / V_TH,
        "surrogate_gradient_width": V_TH, "t_ref": 0.0, "tau_m": TAU_MS, "V_m": 0.0, "V_th": V_TH})
    out = nest.Create("eprop_readout_bsshslm_2020", 1, {
        "C_m": 1.0, "E_L": 0.0, "I_e": 0.0, "loss": "mean_squared_error", "regular_spike_arrival": False,
        "tau_m": TAU_MS, "V_m": 0.0})
    generators, parrots = nest.Create("spike_generator", N_IN), nest.Create("parrot_neuron", N_IN)
    target = nest.Create("step_rate_generator", 1)
    nest.SetDefaults("eprop_synapse_bsshslm_2020", {"optimizer": {
        "type": "gradient_descent", "batch_size": batch, "eta": 1e-4, "Wmin": -100.0, "Wmax": 100.0},
        "average_gradient": False})

    def eprop(weights):
        return {"synapse_model": "eprop_synapse_bsshslm_2020", "delay": 1.0, "tau_m_readout": TAU_MS,
                "weight": weights.astype(np.float32)}

    w_rec = rng.standard_normal((N_REC, N_REC)) / math.sqrt(N_REC)
    np.fill_diagonal(w_rec, 0.0)
    all_to_all = {"rule": "all_to_all", "allow_autapses": False}
    nest.Connect(generators, parrots, "one_to_one", {"synapse_model": "static_synapse", "delay": 1.0})
    nest.Connect(parrots, rec, all_to_all, eprop(rng.standard_normal((N_REC, N_IN)) / math.sqrt(N_IN)))
    nest.Connect(rec, rec, all_to_all, eprop(w_rec))
    nest.Connect(rec, out, all_to_all, eprop(rng.standard_normal((1, N_REC)) / math.sqrt(N_REC)))
    nest.Connect(out, rec, all_to_all, {"synapse_model": "eprop_learning_signal_connection_bsshslm_2020",
                                        "delay": 1.0,
                                        "weight": (rng.standard_normal((N_REC, 1)) / math.sqrt(N_REC)).astype(
                                            np.float32)})
    nest.Connect(target, out, "one_to_one", {"synapse_model": "rate_connection_delayed", "delay": 1.0,
                                             "receptor_type": 2})
    spikes = rng.random((STEPS, N_IN)) < INPUT_RATE
    spikes[0] = False  # NEST's example: no input spike at a sequence's first step
    starts = np.arange(batch) * sequence_ms + offset
    generators.set([{"spike_times": np.hstack([np.flatnonzero(spikes[:, i]) + s for s in starts]).astype(float)}
                    for i in range(N_IN)])
    wave = sines(STEPS, torch.Generator().manual_seed(seed)).numpy()
    target.set({"amplitude_times": np.arange(batch * STEPS) + offset + delays,
                "amplitude_values": np.tile(wave, batch)})
    return batch * sequence_ms + offset + delays + 1.0


def nest_time(nest, batch: int) -> float:
    """Seconds of nest.Simulate for one weight update over ``batch`` sequences (building excluded)."""
    duration = nest_build(nest, batch)
    start = time.perf_counter()
    nest.Simulate(duration)
    return time.perf_counter() - start


def _peak_rss_mb(steps: int, run: bool) -> float:
    # a fresh process per measurement (VmHWM: a child's own peak, bench_eprop_trial says why)
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r});"
            "from eprop_l2l.runtime import configure_cpu; configure_cpu(1);"
            "import bench_eprop_online as b;"
            f"inputs = b.build(32, steps={steps});"
            + ("b.compute('native', inputs);" if run else "")
            + "print(b.high_water_mb())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--no-nest", action="store_true", help="skip NEST even where it is installed")
    parser.add_argument("--no-memory", action="store_true", help="only the timings")
    parser.add_argument("--out", default=None, help="JSON record (a new file; existing records are kept)")
    args = parser.parse_args()
    check_out(args.out)
    configure_cpu(args.threads)
    nest = None if args.no_nest else nest_module()
    cases = [c for c in CASES if c != "nest" or nest is not None]
    results = {"machine": f"{_cpu_name()}, {torch.get_num_threads()} thread(s)", "torch": torch.__version__,
               "nest": None if nest is None else nest.__version__,
               "shape": f"N_in={N_IN}, N={N_REC} LIF, n_out=1, T={STEPS}, float32", "time_s": {}, "spikes": {},
               "speedup": {}, "memory_mb": {}}
    for batch in args.batches:
        inputs = build(batch)
        for case in cases:  # warm-up (the native build, NEST's first kernel)
            if case == "nest":
                nest_time(nest, 1)
            else:
                compute(case, build(batch, steps=50))
        samples = {case: [] for case in cases}
        for _ in range(args.repeats):
            for case in cases:
                if case == "nest":
                    samples[case].append(nest_time(nest, batch))
                    continue
                start = time.perf_counter()
                compute(case, inputs)
                samples[case].append(time.perf_counter() - start)
        times = {case: statistics.median(values) for case, values in samples.items()}
        network, params, x = inputs[:3]
        with torch.no_grad():
            results["spikes"][f"B{batch}"] = int(network.run(params, x)[0].outputs.sum())
        results["time_s"][f"B{batch}"] = times
        speedup = {f"native_vs_{c}": times[c] / times["native"] for c in cases if c != "native"}
        results["speedup"][f"B{batch}"] = speedup
        print(f"B={batch:3d} " + ", ".join(f"{c} {t:.4f} s" for c, t in times.items()) + "; native is "
              + ", ".join(f"{v:.1f}x {k.removeprefix('native_vs_')}" for k, v in speedup.items()), flush=True)
    if not args.no_memory:
        for steps in (1000, 4000):
            results["memory_mb"][f"native_T{steps}"] = _peak_rss_mb(steps, True) - _peak_rss_mb(steps, False)
        print("native online, B=32, peak MB above the inputs:",
              {k: round(v, 1) for k, v in results["memory_mb"].items()}, flush=True)
    write_result(args.out, results)


if __name__ == "__main__":
    main()
