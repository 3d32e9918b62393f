"""Data-parallel meta-training with ``torch.distributed``, launched by ``torchrun`` (see
``scripts/launch_distributed.sh``): every process samples the same task batch from the same generator, takes
its contiguous share of the tasks, and the meta-gradients are averaged with one all-reduce of the flattened
gradients — the mean over equal shards equals the single-process mean over the whole batch. The rate
regulariser is nonlinear in the batch-mean rate, so that mean is taken with a differentiable all-reduce:
its gradient reaches every process's tasks exactly as in one process.

gloo on CPU, nccl on GPU (``distributed.backend=auto``); one GPU per process (``LOCAL_RANK``). All processes
keep identical meta-parameters, optimizer and task-generator states; each draws a device model's noise from its
own stream (``meta.trainer.Shard.noise``); rank 0 alone logs and checkpoints.

Failures are bounded and one line: torchrun's variables are validated before anything is written
(``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); joining the process group, and
every collective operation after it, waits at most ``distributed.timeout_s`` (a peer that never starts, dies
or hangs ends the run with :class:`~.rundir.RunFault` instead of a wait forever).
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError
from ..messages import shown
from ..meta.trainer import Shard
from .rundir import RunFault

LAUNCH = "launch with torchrun (scripts/launch_distributed.sh), or unset WORLD_SIZE to train in one process"


def _env_int(name: str, default: str | None, minimum: int, maximum: int | None = None) -> int:
    raw = os.environ.get(name, default)
    if raw is None:
        raise ConfigError(name, f"not set, but WORLD_SIZE={os.environ.get('WORLD_SIZE')} asks for several "
                          f"processes; {LAUNCH}")
    try:
        value = int(raw.strip())
    except ValueError:
        raise ConfigError(name, f"must be a whole number, got {shown(raw)}; {LAUNCH}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        raise ConfigError(name, f"must be {bound}, got {value}; {LAUNCH}")
    return value


def world_size_from_env() -> int:
    """``WORLD_SIZE`` (1 when unset), a whole number >= 1 (the others: :func:`check_launch_env`)."""
    return _env_int("WORLD_SIZE", "1", 1, 65536)


def check_launch_env() -> int:
    """The variables torchrun sets for several processes (``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``,
    ``MASTER_PORT``), validated; returns this process's rank."""
    world = world_size_from_env()
    if world == 1:
        return 0
    rank = _env_int("RANK", None, 0, world - 1)
    _env_int("LOCAL_RANK", "0", 0, world - 1)
    _env_int("MASTER_PORT", None, 1, 65535)
    if not os.environ.get("MASTER_ADDR", "").strip():
        raise ConfigError("MASTER_ADDR", f"not set, but WORLD_SIZE={world} asks for several processes; {LAUNCH}")
    return rank


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
    every process's copy of what follows, which the mean over processes of the gradients undoes. Those copies
    are identical (every process computes them from the same reduced sum), so the sum of their gradients is
    world_size × this process's: no second reduction, and no synchronisation inside the backward pass."""

    @staticmethod
    def forward(tensor):
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.world_size = dist.get_world_size()

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.world_size


def _task_mean(world_size: int):
    def mean(rates: torch.Tensor) -> torch.Tensor:
        return _AllReduceSum.apply(rates.sum(0)) / (rates.shape[0] * world_size)
    return mean


class LostPeer(RunFault):
    """After the start, a process failed or stopped answering: every other process meets it alike (rank 0's
    line is the one printed; the failed process prints its own cause)."""


def lost_peer(err: BaseException, timeout_s: float, doing: str = "during training") -> LostPeer:
    detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return LostPeer(f"distributed: {doing}, a process failed or did not answer within distributed.timeout_s="
                    f"{timeout_s:g} s ({shown(detail, 100)}); check every process's output, relaunch to resume "
                    "from the latest checkpoint, or raise distributed.timeout_s")


@contextlib.contextmanager
def _native_stderr_held():
    """torch's C++ rendezvous logs retries and native stack traces straight to file descriptor 2: hold them in
    a temporary file; replay them after a successful join (they may matter), drop them after a failure (the
    one-line error says what happened)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    failed = False
    try:
        yield
    except BaseException:
        failed = True
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        with held:
            if not failed:
                held.seek(0)
                text = held.read()
                if text:
                    os.write(2, text)


def setup(backend: str = "auto", device: str = "cpu", timeout_s: float = 120.0) -> Distributed:
    """One process (no ``torchrun`` environment): the identity. Otherwise joins the process group, waiting at
    most ``timeout_s`` for every process."""
    device = torch.device(device)
    world = world_size_from_env()
    if world == 1:
        return Distributed(Shard(), device, None)
    check_launch_env()
    if device.type == "cuda":
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if local >= torch.cuda.device_count():
            raise ConfigError("LOCAL_RANK", f"{local}: this machine has {torch.cuda.device_count()} GPUs; start at "
                              "most one process per GPU (torchrun --nproc_per_node)")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("distributed.backend", "nccl needs GPUs (run.device=cuda); on CPUs use gloo or auto")
    if not dist.is_initialized():
        try:
            with _native_stderr_held():
                dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
        except (RuntimeError, ValueError, OSError) as err:  # DistError, DistStoreError, DistNetworkError, ...
            detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise RunFault(f"distributed: the {world} processes did not all join within distributed.timeout_s="
                           f"{timeout_s:g} s ({shown(detail, 100)}); start all {world} processes (torchrun "
                           f"--nproc_per_node {world}) or raise distributed.timeout_s") from None
    world, rank = dist.get_world_size(), dist.get_rank()
    shard = Shard(rank, world, _reduce_grads(world), _reduce_metrics(world))
    return Distributed(shard, device, _task_mean(world))


def teardown(wait: bool = True) -> None:
    """Leave the process group; ``wait``: first wait (bounded by the group's timeout) for every process."""
    if dist.is_initialized():
        try:
            if wait:
                dist.barrier()
        finally:
            dist.destroy_process_group()
