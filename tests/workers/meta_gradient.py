"""The meta-gradient of one batch of tiny-preset tasks in float64, on one process or — launched by torchrun —
split over several (each process its share of the tasks, gradients averaged, batch-mean rates all-reduced).

    torchrun --standalone --nproc_per_node 2 tests/workers/meta_gradient.py OUT.pt
"""

from __future__ import annotations

import dataclasses
import sys

import torch

from eprop_l2l.meta.params import flat, nested
from eprop_l2l.runs import distributed
from eprop_l2l.runs.build import from_experiment

N_TASKS = 8


def meta_gradient(ctx: distributed.Distributed, global_rates: bool = True) -> dict[str, torch.Tensor]:
    """``global_rates=False`` regularises each process's own batch-mean rate: the naive split, which differs."""
    learner, family, _ = from_experiment("tiny", "inner.fast_loop=false")
    learner = dataclasses.replace(learner, task_mean=ctx.task_mean if global_rates else None)
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(3), torch.float64))
    meta = {k: v.requires_grad_() for k, v in meta.items()}
    batch = ctx.shard.sample(family, N_TASKS, torch.Generator().manual_seed(4)).to(torch.float64)
    learner.forward(nested(meta), batch)["loss"].backward()
    grads = [meta[k].grad for k in sorted(meta)]
    if ctx.shard.reduce_grads is not None:
        ctx.shard.reduce_grads(grads)
    return dict(zip(sorted(meta), grads, strict=True))


if __name__ == "__main__":
    ctx = distributed.setup("gloo", "cpu")
    grads = meta_gradient(ctx)
    local = meta_gradient(ctx, global_rates=False)
    if ctx.is_writer:
        torch.save({"grads": grads, "local": local, "world_size": ctx.shard.world_size}, sys.argv[1])
    distributed.teardown()
