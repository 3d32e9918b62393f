"""Meta-training loop: Adam on the meta-parameters, gradient clipping, step learning-rate decay, periodic
validation on held-out tasks, and a guard that skips non-finite steps (never applying them) and stops after
too many in a row. Fresh tasks every iteration from one explicit generator (spec B6).

Checkpoints, W&B and distributed training wrap this loop (issue "Runs"); it keeps every piece of state they
need in the returned :class:`MetaTrainingState`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import require_count, require_non_negative, require_positive


@dataclass(frozen=True)
class MetaTraining:
    n_iterations: int = 1000
    batch_size: int = 32
    lr: float = 1e-3
    lr_decay: float = 1.0  # multiply the learning rate by this every ``lr_decay_every`` iterations
    lr_decay_every: int = 500
    clip_norm: float = 1.0  # 0 disables clipping
    validate_every: int = 100
    n_validation_tasks: int = 64
    validation_seed: int = 999
    seed: int = 0
    max_nonfinite: int = 10

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
    meta: dict
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator
    iteration: int = 0
    skipped: int = 0
    history: list = field(default_factory=list)


def start(learner, config: MetaTraining, meta: dict | None = None) -> MetaTrainingState:
    generator = torch.Generator().manual_seed(config.seed)
    meta = learner.init_meta_params(generator) if meta is None else meta
    meta = {k: v.detach().clone().requires_grad_() for k, v in meta.items()}
    optimizer = torch.optim.Adam(meta.values(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, config.lr_decay_every, config.lr_decay)
    return MetaTrainingState(meta, optimizer, scheduler, generator)


def meta_train(learner, family, config: MetaTraining, state: MetaTrainingState | None = None,
               callback: Callable[[dict], None] | None = None) -> MetaTrainingState:
    state = start(learner, config) if state is None else state
    validation = family.sample(config.n_validation_tasks, torch.Generator().manual_seed(config.validation_seed))
    consecutive = 0
    while state.iteration < config.n_iterations:
        batch = family.sample(config.batch_size, state.generator)
        out = learner.forward(state.meta, batch)
        state.optimizer.zero_grad()
        out["loss"].backward()
        grads = [p.grad for p in state.meta.values() if p.grad is not None]
        finite = bool(torch.isfinite(out["loss"].detach())) and all(torch.isfinite(g).all() for g in grads)
        record = {"iteration": state.iteration, "loss": float(out["loss"].detach()),
                  "lr": state.scheduler.get_last_lr()[0]}
        if finite:
            consecutive = 0
            if config.clip_norm > 0:
                record["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(state.meta.values(), config.clip_norm))
            state.optimizer.step()
            state.scheduler.step()  # the schedule counts applied steps
        else:
            consecutive += 1
            state.skipped += 1
            record["skipped"] = True
            if consecutive >= config.max_nonfinite:
                raise NonFiniteError(f"meta-training: {consecutive} non-finite steps in a row at iteration "
                                     f"{state.iteration}; lower meta.lr or check the configuration")
        record.update({f"train/{k}": float(v) for k, v in out["metrics"].items()})
        if state.iteration % config.validate_every == 0 or state.iteration == config.n_iterations - 1:
            with torch.no_grad():
                metrics = learner.forward(state.meta, validation)["metrics"]
            record.update({f"val/{k}": float(v) for k, v in metrics.items()})
        state.history.append(record)
        if callback is not None:
            callback(record)
        state.iteration += 1
    return state
