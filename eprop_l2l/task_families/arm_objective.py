"""Outer-loop objectives of the arm task (e-prop 2 code; docs/equations.md): L = 0.5·(0.1·MSE_motor + MSE_cart), with
MSE_motor the mean squared joint-velocity error (rad/s)² and MSE_cart the mean over time, tasks and (x, y) of
the squared hand-position error after integrating the produced velocities through the arm over the trials' own
time step (``batch.dt_ms``, the step the target hand path was integrated with)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch

from ..units import MS_PER_S, step_seconds
from .arm import arm_forward, arm_path_gradient, population_rates
from .base import TaskBatch


def produced_hand(y: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Hand path of the joint velocities ``y [..., T, 2]`` (rad/s) over the steps of ``batch``."""
    return arm_forward(y, dt=step_seconds(batch.dt_ms))


def arm_errors(y: torch.Tensor, batch: TaskBatch) -> dict[str, torch.Tensor]:
    """Per-task errors ``[B]``: mse_motor, mse_cart, hand_rmse (RMS Euclidean hand distance over time)."""
    hand = produced_hand(y, batch)
    target = batch.extra["hand"]
    squared = (hand - target) ** 2
    return {"mse_motor": ((y - batch.targets) ** 2).mean((1, 2)), "mse_cart": squared.mean((1, 2)),
            "hand_rmse": squared.sum(-1).mean(-1).sqrt()}


def arm_outer_loss(y: torch.Tensor, batch: TaskBatch, motor_weight: float = 0.1):
    errors = arm_errors(y, batch)
    loss = 0.5 * (motor_weight * errors["mse_motor"].mean() + errors["mse_cart"].mean())
    return loss, {k: v.mean().detach() for k, v in errors.items()}


@dataclass(frozen=True)
class ArmPlant:
    """The arm as an inner rule sees it (``inner_loop.objectives``, a learned module's produced-path input): what
    the learner's joint velocities ``y [..., T, 2]`` do to the hand, at the family's step ``dt_s`` and with its
    population code. ``target_key`` names the target hand path in ``TaskBatch.extra``."""

    dt_s: float
    n_pop_per_dim: int
    peak_hz: float
    sigma: float

    target_key: ClassVar[str] = "hand"

    def path(self, y: torch.Tensor) -> torch.Tensor:
        """The produced hand path ``[..., T, 2]``."""
        return arm_forward(y, dt=self.dt_s)

    def path_gradient(self, y: torch.Tensor, deviation: torch.Tensor) -> torch.Tensor:
        """∂E/∂y of a hand-path loss with ∂E/∂p = ``deviation`` (the Jacobian's transpose, integrated)."""
        return arm_path_gradient(y, deviation, dt=self.dt_s)

    def code(self, path: torch.Tensor) -> torch.Tensor:
        """Spike probabilities per step ``[..., T, n_context]`` of the family's population code of ``path``:
        the same tuning that codes the target path in the context, as a rate (deterministic, differentiable)."""
        return population_rates(path, self.n_pop_per_dim, self.peak_hz, self.sigma, dt_ms=self.dt_s * MS_PER_S)

    @property
    def n_code(self) -> int:
        return 2 * self.n_pop_per_dim
