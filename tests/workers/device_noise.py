"""The device model's first draws in one meta-training iteration of the tiny preset on the PCM model, on one
process or — launched by torchrun — on each of several (each its share of the tasks).

    torchrun --standalone --nproc_per_node 2 tests/workers/device_noise.py OUT_PREFIX

writes ``OUT_PREFIX.rank<r>.pt`` per process: the first read of the chip (the demonstration's ``w_in``), the
task generator's state and the meta-parameters after the step.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field

import torch

from eprop_l2l.inner_loop.device import PCMDevice
from eprop_l2l.meta.trainer import Shard, meta_train
from eprop_l2l.runs import distributed
from eprop_l2l.runs.build import from_experiment


@dataclass(frozen=True)
class Recording(PCMDevice):
    """The device model, keeping every read it makes."""

    reads: list = field(default_factory=list, compare=False)

    def read(self, w, generator):
        out = super().read(w, generator)
        self.reads.append(out.detach().clone())
        return out


def one_iteration(shard: Shard, task_mean=None) -> dict:
    learner, family, training = from_experiment("tiny", "device.kind=pcm", "task.n_steps=40", "optim.n_iterations=1")
    device = Recording()
    learner = dataclasses.replace(learner, device=device, task_mean=task_mean)
    state = meta_train(learner, family, training, shard=shard)
    return {"first_read": device.reads[0], "generator": state.generator.get_state(),
            "w_rec": state.meta["network"]["w_rec"].detach().clone(), "loss": state.history[0]["loss"]}


if __name__ == "__main__":
    ctx = distributed.setup("gloo", "cpu")
    result = one_iteration(ctx.shard, ctx.task_mean)
    torch.save({**result, "world_size": ctx.shard.world_size}, f"{sys.argv[1]}.rank{ctx.shard.rank}.pt")
    distributed.teardown()
