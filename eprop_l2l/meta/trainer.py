"""Meta-training loop: Adam on the meta-parameters, gradient clipping, step learning-rate decay, periodic
validation on held-out tasks, and a guard that skips non-finite steps (never applying them) and stops after
too many in a row. Fresh tasks every iteration from one explicit generator (docs/equations.md).

Checkpoints, W&B and distributed training wrap this loop (issue "Runs"); it keeps every piece of state they
need in the returned :class:`MetaTrainingState`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import require_count, require_non_negative, require_positive


@dataclass(frozen=True)
class MetaTraining:
    """The validated settings of the outer loop. No defaults here: the one place they are stated is the run
    schema (``runs.config.OptimConfig``, documented in docs/hyperparameters.md), from which ``runs.build``
    constructs this record (``MetaTraining(**asdict(cfg.optim))``)."""

    n_iterations: int
    batch_size: int
    lr: float
    lr_decay: float  # multiply the learning rate by this every ``lr_decay_every`` iterations
    lr_decay_every: int
    clip_norm: float  # 0 disables clipping
    validate_every: int
    n_validation_tasks: int
    validation_seed: int
    seed: int
    max_nonfinite: int

    def __post_init__(self):
        require_count("meta.n_iterations", self.n_iterations, minimum=0)
        require_count("meta.batch_size", self.batch_size)
        require_positive("meta.lr", self.lr)
        require_positive("meta.lr_decay", self.lr_decay)
        require_count("meta.lr_decay_every", self.lr_decay_every)
        require_non_negative("meta.clip_norm", self.clip_norm)
        require_count("meta.validate_every", self.validate_every)
        require_count("meta.n_validation_tasks", self.n_validation_tasks)
        require_count("meta.max_nonfinite", self.max_nonfinite)


class NonFiniteError(RuntimeError):
    pass


@dataclass
class MetaTrainingState:
    """Everything a resumed run needs to continue bit-identically (see ``runs.checkpoint``)."""

    meta: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the training task stream (CPU: the same tasks on any device)
    iteration: int = 0
    skipped: int = 0
    consecutive_nonfinite: int = 0
    history: list = field(default_factory=list)


def start(learner, config: MetaTraining, meta: dict | None = None, device: str | torch.device = "cpu"
          ) -> MetaTrainingState:
    generator = torch.Generator().manual_seed(config.seed)
    meta = learner.init_meta_params(generator) if meta is None else meta
    meta = {k: v.detach().to(device).clone().requires_grad_() for k, v in meta.items()}
    optimizer = torch.optim.Adam(meta.values(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_decay_every, config.lr_decay)
    return MetaTrainingState(meta, optimizer, scheduler, generator)


@dataclass(frozen=True)
class Shard:
    """This process's share of every task batch, and how meta-gradients and batch means are combined across
    processes (``runs.distributed`` fills it in; the default is one process)."""

    rank: int = 0
    world_size: int = 1
    reduce_grads: Callable[[list[torch.Tensor]], None] | None = None  # in place: mean over processes
    reduce_metrics: Callable[[dict], dict] | None = None

    def take(self, batch):
        if self.world_size == 1:
            return batch
        size = batch.batch_size // self.world_size
        return batch.select(slice(self.rank * size, (self.rank + 1) * size))


def _device(state: MetaTrainingState) -> torch.device:
    return next(iter(state.meta.values())).device


def meta_train(learner, family, config: MetaTraining, state: MetaTrainingState | None = None,
               callback: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
               shard: Shard = Shard()) -> MetaTrainingState:
    """Run meta-iterations until ``config.n_iterations`` or until ``should_stop()`` says so (checked between
    iterations, so a stop never leaves a half-applied step)."""
    state = start(learner, config) if state is None else state
    device = _device(state)
    validation = shard.take(family.sample(config.n_validation_tasks,
                                          torch.Generator().manual_seed(config.validation_seed))).to(device)
    while state.iteration < config.n_iterations and not (should_stop is not None and should_stop()):
        batch = shard.take(family.sample(config.batch_size, state.generator)).to(device)
        started = time.perf_counter()
        out = learner.forward(state.meta, batch)
        state.optimizer.zero_grad()
        out["loss"].backward()
        if hasattr(learner, "constrain_gradients"):
            learner.constrain_gradients(state.meta)
        params = [p for p in state.meta.values() if p.grad is not None]
        grads = [p.grad for p in params]
        if shard.reduce_grads is not None:
            shard.reduce_grads(grads)
        loss = out["loss"].detach()
        if shard.reduce_metrics is not None:  # the mean over the whole batch, the same on every process
            loss = shard.reduce_metrics({"loss": loss})["loss"]
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        record = {"iteration": state.iteration, "loss": float(loss), "lr": state.scheduler.get_last_lr()[0]}
        if "log_inner_lr" in state.meta:  # the meta-learned inner η this iteration's update used
            record["inner_lr"] = float(state.meta["log_inner_lr"].detach().exp())
        if finite:
            state.consecutive_nonfinite = 0
            norm = torch.nn.utils.clip_grad_norm_(params, config.clip_norm if config.clip_norm > 0 else float("inf"))
            record["grad_norm"] = float(norm)
            state.optimizer.step()
            state.scheduler.step()  # the schedule counts applied steps
        else:
            state.consecutive_nonfinite += 1
            state.skipped += 1
            record["skipped"] = True
            if state.consecutive_nonfinite >= config.max_nonfinite:
                raise NonFiniteError(f"meta-training: {state.consecutive_nonfinite} non-finite steps in a row at "
                                     f"iteration {state.iteration}; lower meta.lr or check the configuration")
        metrics = {k: v.detach() for k, v in out["metrics"].items()}
        if shard.reduce_metrics is not None:
            metrics = shard.reduce_metrics(metrics)
        record.update({f"train/{k}": float(v) for k, v in metrics.items()})
        record["skipped_total"] = state.skipped
        if state.iteration % config.validate_every == 0 or state.iteration == config.n_iterations - 1:
            with torch.no_grad():
                metrics = learner.forward(state.meta, validation)["metrics"]
            if shard.reduce_metrics is not None:
                metrics = shard.reduce_metrics(metrics)
            record.update({f"val/{k}": float(v) for k, v in metrics.items()})
        record["seconds"] = time.perf_counter() - started
        state.history.append(record)
        state.iteration += 1
        if callback is not None:
            callback(record)
    return state
