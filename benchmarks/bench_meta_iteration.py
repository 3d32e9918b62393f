"""Cost of one e-prop 2 meta-iteration (demonstration → fused e-prop update by the error module → test trial →
meta-loss → backward) at the ``cpu`` and ``paper`` preset sizes, against

  forward    the forward passes of both trials (learning network + error module), no gradient
  reference  the same meta-iteration with the plain autograd time loop (a straightforward implementation of
             the recipe: Python loop over steps, autograd through everything, as in the authors' code)
  fast       the same with the spiking loops' hand-written backward (what the trainer uses)

All in one process, medians of ``--repeats`` runs; peak memory as VmHWM of the process (one case per run with
``--case``).

    python benchmarks/bench_meta_iteration.py --preset cpu --threads 1 --repeats 3
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

import torch

from eprop_l2l.runs.build import from_experiment
from eprop_l2l.runtime import configure_cpu


def build(preset: str, fast: bool, batch_size: int | None, device: str):
    learner, family, config = from_experiment(preset, f"inner.fast_loop={fast}")
    batch = family.sample(batch_size or config.batch_size, torch.Generator().manual_seed(0)).to(device)
    meta = {k: v.to(device) for k, v in learner.init_meta_params(torch.Generator().manual_seed(0)).items()}
    return learner, batch, meta


def meta_iteration(learner, batch, meta):
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(leaves, batch)
    out["loss"].backward()


@torch.no_grad()
def forward_both_trials(learner, batch, meta):
    from eprop_l2l.error_modules.base import Observation

    context = batch.extra["error_module_inputs"]
    for _ in range(2):
        trajectory, y = learner.network.run(meta, batch.inputs)
        learner.error_module.run(meta, Observation(None, y, batch.targets, trajectory.outputs, batch.inputs,
                                                   context))


def synchronize():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def timed(fn, repeats):
    """Median seconds per call and the peak GPU memory of one call (MB; 0 on CPU)."""
    fn()
    synchronize()
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize()
        samples.append(time.perf_counter() - start)
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else 0.0
    return statistics.median(samples), peak


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=None, help="override the preset's tasks per batch")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    configure_cpu(args.threads)
    learner, batch, meta = build(args.preset, True, args.batch_size, args.device)
    reference_learner = dataclasses.replace(learner, fast_loop=False,
                                            error_module=dataclasses.replace(learner.error_module, fast_loop=False))
    measured = {
        "forward": timed(lambda: forward_both_trials(learner, batch, meta), args.repeats),
        "fast": timed(lambda: meta_iteration(learner, batch, meta), args.repeats),
        "reference": timed(lambda: meta_iteration(reference_learner, batch, meta), args.repeats),
    }
    times = {k: v[0] for k, v in measured.items()}
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {"preset": args.preset, "tasks": batch.inputs.shape[0], "threads": torch.get_num_threads(),
              "device": device, "time_s": times, "fast_over_forward": times["fast"] / times["forward"],
              "peak_gpu_memory_mb": {k: v[1] for k, v in measured.items()} if device != "cpu" else None,
              "reference_over_fast": times["reference"] / times["fast"]}
    print(json.dumps(result, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
