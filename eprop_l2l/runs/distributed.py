"""Data-parallel meta-training with ``torch.distributed``, launched by ``torchrun`` (see
``scripts/launch_distributed.sh``): every process samples the same task batch from the same generator, takes
its contiguous share of the tasks, and the meta-gradients are averaged with one all-reduce of the flattened
gradients — the mean over equal shards equals the single-process mean over the whole batch. The rate
regulariser is nonlinear in the batch-mean rate, so that mean is taken with a differentiable all-reduce:
its gradient reaches every process's tasks exactly as in one process.

gloo on CPU, nccl on GPU (``distributed.backend=auto``); one GPU per process (``LOCAL_RANK``). All processes
keep identical meta-parameters, optimizer and generator states; rank 0 alone logs and checkpoints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..meta.trainer import Shard


def world_size_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass(frozen=True)
class Distributed:
    shard: Shard
    device: torch.device
    task_mean: object | None  # differentiable cross-process mean of per-task rates, or None (one process)

    @property
    def is_writer(self) -> bool:
        return self.shard.rank == 0


def _reduce_grads(world_size: int):
    def reduce(grads: list[torch.Tensor]) -> None:
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()
    return reduce


def _reduce_metrics(world_size: int):
    def reduce(metrics: dict) -> dict:
        if not metrics:
            return metrics
        keys = sorted(metrics)
        values = torch.stack([torch.as_tensor(metrics[k], dtype=torch.float64).reshape(()) for k in keys])
        device = next(iter(metrics.values())).device if isinstance(next(iter(metrics.values())), torch.Tensor) \
            else torch.device("cpu")
        values = values.to(device)
        dist.all_reduce(values)
        return dict(zip(keys, (values / world_size).cpu(), strict=True))
    return reduce


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is again a sum over processes: each process receives the gradient of
    every process's (identical) copy of what follows, which the mean over processes of the gradients undoes."""

    @staticmethod
    def forward(tensor):
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def setup_context(ctx, inputs, output):
        pass

    @staticmethod
    def backward(ctx, grad):
        total = grad.clone()
        dist.all_reduce(total)
        return total


def _task_mean(world_size: int):
    def mean(rates: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(rates.sum(0)) / (rates.shape[0] * world_size)
    return mean


def setup(backend: str = "auto", device: str = "cpu") -> Distributed:
    """One process (no ``torchrun`` environment): the identity. Otherwise joins the process group."""
    device = torch.device(device)
    if world_size_from_env() == 1:
        return Distributed(Shard(), device, None)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend)
    world, rank = dist.get_world_size(), dist.get_rank()
    shard = Shard(rank, world, _reduce_grads(world), _reduce_metrics(world))
    return Distributed(shard, device, _task_mean(world))


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
