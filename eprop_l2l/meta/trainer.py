"""Meta-training loop: Adam on the meta-parameters, gradient clipping, step learning-rate decay, periodic
validation on held-out tasks, and a guard that skips non-finite steps (never applying them) and stops after
too many in a row. Fresh tasks every iteration from one explicit generator (docs/equations.md).

Checkpoints, W&B and distributed training wrap this loop (issue "Runs"); it keeps every piece of state they
need in the returned :class:`MetaTrainingState`.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..errors import ConfigError, require_choice, require_count, require_non_negative, require_positive
from . import params as tree
from .learner import NOISE_SEED_OFFSET, run_learner


@dataclass(frozen=True)
class MetaTraining:
    """The validated settings of the outer loop, with their defaults (the authors' e-prop 2 setting,
    docs/hyperparameters.md): the one place they are stated. The run schema (``config.schema.OptimConfig``) reads
    them with ``component_default``, and ``runs.build`` constructs this record from it."""

    n_iterations: int = 10000
    batch_size: int = 100  # tasks per meta-iteration, split over distributed processes
    lr: float = 1e-3
    lr_decay: float = 0.99  # multiply the learning rate by this every ``lr_decay_every`` iterations
    lr_decay_every: int = 500
    clip_norm: float = 1.0  # 0 disables clipping
    validate_every: int = 50
    n_validation_tasks: int = 64
    validation_seed: int = 999
    seed: int = 0  # the training task stream and the initial meta-parameters
    max_nonfinite: int = 10  # abort after this many non-finite steps in a row
    # The compute budget of the whole training, in CPU minutes of this process summed over every invocation
    # (resumes included); training stops when it is spent. 0 = no budget (n_iterations alone).
    budget_minutes: float = 0.0
    # "steps": the rate is multiplied by lr_decay every lr_decay_every applied steps. "budget": it follows the
    # fraction f of budget_minutes spent, lr · lr_end**f, so that every run anneals fully within its budget
    # whatever its speed per iteration (equal-compute comparisons).
    lr_schedule: str = "steps"
    lr_end: float = 0.1  # lr_schedule=budget: the fraction of lr left when the budget is spent

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
        require_non_negative("meta.budget_minutes", self.budget_minutes)
        require_choice("meta.lr_schedule", self.lr_schedule, LR_SCHEDULES)
        if self.lr_schedule == "budget" and not self.budget_minutes > 0:
            raise ConfigError("meta.lr_schedule", "'budget' follows the fraction of meta.budget_minutes spent; "
                              "set meta.budget_minutes > 0")
        require_positive("meta.lr_end", self.lr_end)
        if self.lr_end > 1:
            raise ConfigError("meta.lr_end", f"must be in (0, 1] (the fraction of the rate left when the budget "
                              f"is spent), got {self.lr_end!r}")

    def budget_fraction(self, cpu_seconds: float) -> float:
        return min(1.0, cpu_seconds / (60.0 * self.budget_minutes)) if self.budget_minutes > 0 else 0.0

    def spent(self, cpu_seconds: float) -> bool:
        return self.budget_minutes > 0 and cpu_seconds >= 60.0 * self.budget_minutes


LR_SCHEDULES = ("steps", "budget")


class NonFiniteError(RuntimeError):
    pass


@dataclass
class MetaTrainingState:
    """Everything a resumed run needs to continue bit-identically (see ``runs.checkpoint``)."""

    meta: dict  # the meta-parameter tree (meta.params)
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # the training task stream (CPU: the same tasks on any device)
    iteration: int = 0
    skipped: int = 0
    consecutive_nonfinite: int = 0
    history: list = field(default_factory=list)
    # CPU seconds of every meta-iteration so far (the budget's clock); restored from the history on resume
    cpu_seconds: float = 0.0


def start(learner, config: MetaTraining, meta: dict | None = None, device: str | torch.device = "cpu"
          ) -> MetaTrainingState:
    generator = torch.Generator().manual_seed(config.seed)
    meta = learner.init_meta_params(generator) if meta is None else meta
    meta = tree.tree_map(lambda v: v.detach().to(device).clone().requires_grad_(), meta)
    # Adam's state is keyed by position in this list: the tree's leaf order (runs.checkpoint relies on it)
    optimizer = torch.optim.Adam(tree.leaves(meta), lr=config.lr)
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

    def sample(self, family, batch_size: int, generator: torch.Generator):
        """This process's share of ``family.sample(batch_size, generator)``; the generator advances as by all of it,
        so every process draws the same task stream."""
        if self.world_size == 1:
            return family.sample(batch_size, generator)
        size = batch_size // self.world_size
        return family.sample_rows(batch_size, generator, slice(self.rank * size, (self.rank + 1) * size))

    def noise(self, shared: torch.Generator, seed: int, *counters: int) -> torch.Generator:
        """The generator of a device model's draws on this process. In one process: ``shared``, the stream a
        single-process run has always drawn them from. In several: this process's own stream,
        :func:`process_generator` of ``seed``, the rank and ``counters`` — every process draws independent noise
        for its own tasks, and the task stream, which all processes must advance alike, is left alone."""
        return shared if self.world_size == 1 else process_generator(seed, self.rank, *counters)


def process_generator(seed: int, rank: int, *counters: int) -> torch.Generator:
    """A generator seeded from ``(seed, rank, *counters)`` (64 bits of their SHA-256): distinct for every process
    and counter (the iteration), and derived again on resume, so it needs no checkpointed state."""
    digest = hashlib.sha256(repr((seed, rank, *counters)).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def meta_train(learner, family, config: MetaTraining, state: MetaTrainingState | None = None,
               callback: Callable[[dict], None] | None = None, should_stop: Callable[[], bool] | None = None,
               shard: Shard = Shard()) -> MetaTrainingState:
    """Run meta-iterations until ``config.n_iterations`` or until ``should_stop()`` says so (checked between
    iterations, so a stop never leaves a half-applied step)."""
    state = start(learner, config) if state is None else state
    device = tree.device(state.meta)
    validation = shard.sample(family, config.n_validation_tasks,
                              torch.Generator().manual_seed(config.validation_seed)).to(device)
    while (state.iteration < config.n_iterations and not config.spent(state.cpu_seconds)
           and not (should_stop is not None and should_stop())):
        # the clocks include drawing the tasks: a user's iteration, and the budget, pay for it too
        started, started_cpu = time.perf_counter(), time.process_time()
        batch = shard.sample(family, config.batch_size, state.generator).to(device)
        if config.lr_schedule == "budget":
            for group in state.optimizer.param_groups:
                group["lr"] = config.lr * config.lr_end ** config.budget_fraction(state.cpu_seconds)
        out = run_learner(learner, state.meta, batch,
                          shard.noise(state.generator, config.seed + NOISE_SEED_OFFSET, state.iteration))
        state.optimizer.zero_grad()
        out["loss"].backward()
        if hasattr(learner, "constrain_gradients"):
            learner.constrain_gradients(state.meta)
        params = [p for p in tree.leaves(state.meta) if p.grad is not None]
        grads = [p.grad for p in params]
        if shard.reduce_grads is not None:
            shard.reduce_grads(grads)
        # the meta-loss and the metrics by their names in the record: means over the whole batch, the same on every
        # process, in one reduction
        logged = {"loss": out["loss"].detach(), **{f"train/{k}": v.detach() for k, v in out["metrics"].items()}}
        if shard.reduce_metrics is not None:
            logged = shard.reduce_metrics(logged)
        loss = logged.pop("loss")
        finite = bool(torch.isfinite(loss)) and all(bool(torch.isfinite(g).all()) for g in grads)
        record = {"iteration": state.iteration, "loss": float(loss), "lr": state.optimizer.param_groups[0]["lr"]}
        if tree.LOG_INNER_LR in state.meta:  # the meta-learned inner learning rate this iteration's update used
            record["inner_lr"] = float(state.meta[tree.LOG_INNER_LR].detach().exp())
        if finite:
            state.consecutive_nonfinite = 0
            norm = torch.nn.utils.clip_grad_norm_(params, config.clip_norm if config.clip_norm > 0 else float("inf"))
            record["grad_norm"] = float(norm)
            state.optimizer.step()
            if config.lr_schedule == "steps":
                state.scheduler.step()  # the schedule counts applied steps
        else:
            state.consecutive_nonfinite += 1
            state.skipped += 1
            record["skipped"] = True
            if state.consecutive_nonfinite >= config.max_nonfinite:
                raise NonFiniteError(f"meta-training: {state.consecutive_nonfinite} non-finite steps in a row at "
                                     f"iteration {state.iteration}; lower meta.lr or check the configuration")
        record.update({k: float(v) for k, v in logged.items()})
        record["skipped_total"] = state.skipped
        if state.iteration % config.validate_every == 0 or state.iteration == config.n_iterations - 1:
            with torch.no_grad():
                # the same device draws at every validation: its curve compares iterations, not noise
                seed = config.validation_seed + NOISE_SEED_OFFSET
                noise = shard.noise(torch.Generator().manual_seed(seed), seed)
                metrics = run_learner(learner, state.meta, validation, noise)["metrics"]
            if shard.reduce_metrics is not None:
                metrics = shard.reduce_metrics(metrics)
            record.update({f"val/{k}": float(v) for k, v in metrics.items()})
        record["seconds"] = time.perf_counter() - started
        record["cpu_seconds"] = time.process_time() - started_cpu
        if config.budget_minutes > 0 and shard.reduce_metrics is not None:  # one clock, so all ranks stop together
            record["cpu_seconds"] = float(shard.reduce_metrics(
                {"cpu_seconds": torch.tensor(record["cpu_seconds"], dtype=torch.float64, device=device)}
            )["cpu_seconds"])
        state.cpu_seconds += record["cpu_seconds"]
        state.history.append(record)
        state.iteration += 1
        if callback is not None:
            callback(record)
    return state
