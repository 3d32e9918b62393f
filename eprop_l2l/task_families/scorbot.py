"""The ED-Scorbot task of natural e-prop (Ortner et al. 2025; the authors' ``online_learning_robot``;
docs/natural_eprop.md): the robot's end effector must follow a demonstrated 3-D path by moving its base and
shoulder.

Kinematics: :mod:`.scorbot_kinematics` (positions in metres, the base and the shoulder move).

Trials: smoothed Brownian velocities (``brownian.smoothed_brownian``, δ = 0.65, M = 120, clip ±π) in rad/s of the
arm's clock; the arm advances ``kinematic_step_s`` = 10 ms per network step (the recipe's angle += 0.01·ω), so a
249-step trial of 1-ms network steps moves the arm for 2.49 s. The target angles are clipped to the joint limits
(base ±130°, shoulder ±70°) and the target hand path is computed from the clipped angles. The target velocities
are, by default, not recomputed (as in the recipe, whose velocity output is scored on the unclipped ω: the two
targets disagree where the clip acts); ``consistent_targets`` makes them the velocities of the clipped path, so
that following them exactly reproduces the target path. Either way ``extra["clip_free"]`` marks the trajectories
the clip never acts on, the subset (``subsets``) the evaluation also reports. Inputs: the learning
network sees a sequential clock (5 neurons, each spiking every 10 ms for 50 ms in turn); the error module
(learning-signal generator) additionally sees the 48-neuron binary code of the target hand path (``context``).

Scored as the paper reports: the end effector's RMS deviation from the target path in cm (√ mean_t ‖p − p*‖²)
and each joint's angular-velocity RMSE (rad/s), before and after the update.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError, require_count, require_positive
from ..units import whole_steps
from .base import FamilyBase, TaskBatch, require_bool
from .brownian import binary_position_code, check_code_bits, sequential_clock, smoothed_brownian
from .scorbot_figure import figure_one_shot
from .scorbot_kinematics import (  # noqa: F401 (the kinematics are part of this module's public names)
    CM_PER_M,
    JOINT_NAMES,
    hand_path,
    moving_joint_angles,
    scorbot_position,
)


@dataclass(frozen=True)
class ScorbotBrownian(FamilyBase):
    n_steps: int = 249
    n_clock: int = 5
    clock_segment_ms: int = 50
    clock_period_ms: int = 10
    code_bits: int = 16
    delta: float = 0.65
    window: int = 120  # steps of the recipe's grid (its Hann window M)
    clip: float = math.pi  # rad/s
    base_limit_deg: float = 130.0
    shoulder_limit_deg: float = 70.0
    kinematic_step_s: float = 0.01  # arm time per network step (the recipe's angle += 0.01·ω)
    # the target velocities: false, the recipe's (unclipped, inconsistent with the clipped path where the joint
    # limits act); true, those of the clipped path ((θ_c^t − θ_c^{t−1}) / kinematic_step_s, θ_c^{−1} = 0)
    consistent_targets: bool = False
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): the recipe's trials need 1 ms

    name: ClassVar[str] = "scorbot_brownian"
    loss: ClassVar[str] = "mse"
    n_out: ClassVar[int] = 2
    metric_keys: ClassVar[tuple[str, ...]] = ("deviation_cm", "omega_rmse_base", "omega_rmse_shoulder",
                                              "mse_cart", "mse_motor", "hand_rmse")
    primary_metric: ClassVar[str] = "deviation_cm"  # the paper's number
    RECIPE_STEP_MS: ClassVar[float] = 1.0  # the recipe's window and clock are in 1-ms steps

    def __post_init__(self):
        for key in ("n_steps", "n_clock", "clock_segment_ms", "clock_period_ms", "window"):
            require_count(f"{self.name}.{key}", getattr(self, key))
        check_code_bits(f"{self.name}.code_bits", self.code_bits)
        require_bool(f"{self.name}.consistent_targets", self.consistent_targets)
        for key in ("delta", "clip", "base_limit_deg", "shoulder_limit_deg", "kinematic_step_s", "dt_ms"):
            require_positive(f"{self.name}.{key}", getattr(self, key))
        if self.n_steps < self.window - 1:
            raise ConfigError(f"{self.name}.n_steps", f"must be >= window - 1 = {self.window - 1} (the smoothing "
                              f"mirrors the last window - 1 steps), got {self.n_steps}")
        if self.dt_ms != self.RECIPE_STEP_MS:
            raise ConfigError(f"{self.name}.dt_ms", f"the recipe's trials are defined on 1-ms steps, got "
                              f"{self.dt_ms:g} ms")
        for key in ("clock_segment_ms", "clock_period_ms"):
            whole_steps(f"{self.name}.dt_ms", key, getattr(self, key), self.dt_ms)

    @property
    def n_in(self) -> int:
        return self.n_clock

    @property
    def n_context(self) -> int:
        return 3 * self.code_bits

    @property
    def limits(self) -> torch.Tensor:
        return torch.tensor([self.base_limit_deg, self.shoulder_limit_deg], dtype=torch.float64) * math.pi / 180

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        self._check_batch_size(batch_size)
        omega = smoothed_brownian(batch_size, 2, self.n_steps, generator, self.delta, self.window, self.clip)
        return self.trials(omega, dtype)

    def trials(self, omega: torch.Tensor, dtype: torch.dtype = torch.float32) -> TaskBatch:
        """The trials of drawn velocities ``omega [B, n_steps, 2]`` (rad/s): clock, clipped target angles, the
        target path and its binary code, the target velocities (``consistent_targets``) and which trajectories
        the clip never acts on (deterministic: no generator needed)."""
        if omega.dim() != 3 or omega.shape[1:] != (self.n_steps, 2):
            raise ConfigError(f"{self.name}.joint_velocities", f"must have shape [B, {self.n_steps}, 2], got "
                              f"{list(omega.shape)}")
        limits = self.limits.to(omega.device)
        free = moving_joint_angles(omega.to(torch.float64), self.kinematic_step_s)
        angles = torch.maximum(torch.minimum(free, limits), -limits)
        # [B], 1 where the clamp leaves every step as it is (a number, as the rest of extra: it is cast and
        # withheld alike)
        clip_free = (free.abs() <= limits).all(-1).all(-1)
        if self.consistent_targets:
            omega = torch.diff(angles, dim=-2, prepend=torch.zeros_like(angles[..., :1, :])) / self.kinematic_step_s
        hand = hand_path(angles)
        steps = whole_steps(f"{self.name}.dt_ms", "clock_segment_ms", self.clock_segment_ms, self.dt_ms)
        period = whole_steps(f"{self.name}.dt_ms", "clock_period_ms", self.clock_period_ms, self.dt_ms)
        clock = sequential_clock(self.n_steps, self.n_clock, steps, period).to(omega.device)
        clock = clock.expand(omega.shape[0], -1, -1)
        mask = torch.ones(omega.shape[0], self.n_steps, dtype=dtype, device=omega.device)
        return TaskBatch(clock.to(dtype).contiguous(), omega.to(dtype), mask,
                         {"hand": hand.to(dtype), "angles": angles.to(dtype), "clip_free": clip_free.to(dtype)},
                         dt_ms=self.dt_ms, context=binary_position_code(hand, self.code_bits).to(dtype))

    def subsets(self, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """The trajectories an evaluation also reports apart (``[B]`` bool each): ``clip_free``, those whose
        target angles never reach the joint limits (the recipe's two targets agree on them)."""
        return {"clip_free": batch.extra["clip_free"] == 1}

    def produced_path(self, y: torch.Tensor) -> torch.Tensor:
        """The end effector's path ``[..., T, 3]`` (m) of the produced velocities (no clipping, as the recipe)."""
        return hand_path(moving_joint_angles(y, self.kinematic_step_s))

    def errors(self, y: torch.Tensor, batch: TaskBatch) -> dict[str, torch.Tensor]:
        squared = (self.produced_path(y) - batch.extra["hand"]) ** 2
        hand_rmse = squared.sum(-1).mean(-1).sqrt()
        omega_rmse = ((y - batch.targets) ** 2).mean(1).sqrt()  # [B, 2]
        return {"deviation_cm": CM_PER_M * hand_rmse, "omega_rmse_base": omega_rmse[:, 0],
                "omega_rmse_shoulder": omega_rmse[:, 1], "mse_cart": squared.mean((1, 2)),
                "mse_motor": ((y - batch.targets) ** 2).mean((1, 2)), "hand_rmse": hand_rmse}

    def outer_loss(self, y: torch.Tensor, batch: TaskBatch):
        """½ mean joint-velocity MSE + ½ mean end-effector MSE (m²), the recipe's task loss."""
        errors = self.errors(y, batch)
        loss = 0.5 * (errors["mse_motor"].mean() + errors["mse_cart"].mean())
        return loss, {k: v.mean().detach() for k, v in errors.items()}

    def one_shot_figure(self, path, batch: TaskBatch, out: dict, per_task: dict | None = None,
                        index: int | None = None) -> dict:
        return figure_one_shot(self, path, batch, out, per_task=per_task, index=index)
