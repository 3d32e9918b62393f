"""Cost of the MAML-style inner step's meta-gradient (``inner=bptt``): one demonstration trial, its exact BPTT
gradient per task kept differentiable (create_graph), and the second-order backward of a scalar of those
per-task gradients to the shared initial weights — the part of a MAML meta-iteration that dominates its time.

Two ways to get one gradient per task, same values (``tests/test_bptt_per_task.py``), in one process, repeats
alternating:

* ``copies``  the initial weights expanded to per-task copies ``[B, N, N]`` and differentiated by autograd —
  what a competent PyTorch user writes for per-task MAML gradients;
* ``shared``  eprop-l2l's ``bptt_result(per_task=True)``: the trial on the shared matrices, autograd for
  ∂E/∂(input current) per step, and each task's gradient as one product over time.

Sizes: the ``cpu_hour`` preset's learner (200 LIF, T = 500) with 16 tasks, and the ``cpu`` preset's (100 LIF)
with 16 tasks.

    python benchmarks/bench_maml_step.py --threads 1 --repeats 3 --out benchmarks/results/maml_step_cpu.json
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from _results import check_out, write_result

from eprop_l2l.inner_loop.bptt import bptt_result
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.runs.build import from_experiment
from eprop_l2l.runtime import configure_cpu

SIZES = {"cpu_hour": ("cpu_hour", "inner=bptt"), "cpu": ("cpu", "inner=bptt")}


def meta_gradient(learner, meta, batch, layout: str) -> float:
    """Seconds for the per-task gradients (create_graph) and the second-order backward through them."""
    leaves = {k: v.detach().clone().requires_grad_() for k, v in meta["network"].items()}
    params = leaves
    if layout == "copies":
        b = batch.inputs.shape[0]
        params = {k: (v.expand(b, *v.shape) if k in learner.plastic else v) for k, v in leaves.items()}
    start = time.perf_counter()
    result = bptt_result(learner.network, params, batch.inputs, batch.targets, batch.mask, Loss("mse"),
                         plastic=learner.plastic, create_graph=True, per_task=layout == "shared")
    scalar = sum(g.square().sum() for g in result.grads.values())
    scalar.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="cpu,cpu_hour")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    check_out(args.out)
    configure_cpu(args.threads)
    results = {"threads": torch.get_num_threads(), "torch": torch.__version__, "sizes": {}}
    for size in args.sizes.split(","):
        learner, family, _ = from_experiment(*SIZES[size])
        meta = learner.init_meta_params(torch.Generator().manual_seed(0))
        batch = family.sample(16, torch.Generator().manual_seed(1))
        samples = {"copies": [], "shared": []}
        for layout in samples:  # warm-up (kernel build, allocator)
            meta_gradient(learner, meta, batch, layout)
        for _ in range(args.repeats):
            for layout in samples:
                samples[layout].append(meta_gradient(learner, meta, batch, layout))
        times = {k: statistics.median(v) for k, v in samples.items()}
        results["sizes"][size] = {**times, "speedup": times["copies"] / times["shared"]}
        print(f"{size}: per-task copies {times['copies']:.3f} s, shared weights {times['shared']:.3f} s, "
              f"{times['copies'] / times['shared']:.1f}x", flush=True)
    write_result(args.out, results)


if __name__ == "__main__":
    main()
