"""Outer-loop objectives of the arm task (e-prop 2 code; docs/equations.md): L = 0.5·(0.1·MSE_motor + MSE_cart), with
MSE_motor the mean squared joint-velocity error (rad/s)² and MSE_cart the mean over time, tasks and (x, y) of
the squared hand-position error after integrating the produced velocities through the arm over the trials' own
time step (``batch.dt_ms``, the step the target hand path was integrated with)."""

from __future__ import annotations

import torch

from .arm_kinematics import arm_forward
from .base import TaskBatch


def produced_hand(y: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
    """Hand path of the joint velocities ``y [..., T, 2]`` (rad/s) over the steps of ``batch``."""
    return arm_forward(y, dt_ms=batch.dt_ms)


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
