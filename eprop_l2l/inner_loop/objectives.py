"""What the demonstration's error is measured on — the inner objective — and so what an inner rule is given.

* ``motor``: E = ½ Σ_t |y − y*|² against the target outputs (the arm: joint velocities ω*); the output error
  ∂E/∂y = y − y*. Reads the motor targets.
* ``hand``: E = ½ Σ_t |p − p*|² between the hand path p the learner's output produces through the plant and
  the target hand path p*; the error a feedback matrix projects is the Cartesian deviation p − p* (2 numbers
  per step, online, plant-agnostic). Reads the target and the produced path.
* ``hand_gradient``: the same E; the error is its exact gradient on the outputs,
  ∂E/∂y^{t'} = δt Σ_{t≥t'} J^tᵀ (p^t − p*^t) (J the plant's Jacobian). Projected by symmetric feedback it is
  e-prop 1 with the learning signal J^tᵀ(p^t − p*^t) and eligibility traces that integrate like the arm (the
  arm integrates the readout): Σ_t L^t Σ_{t'≤t} δt ē^{t'} = Σ_{t'} ē^{t'} δt Σ_{t≥t'} L^t, so the fused update
  uses the anticausal sum above. Reads the target and the produced path and the plant's Jacobian. A BPTT step
  on E descends this gradient too (autograd through the plant).

``InnerObjective.loss(batch)`` is a :class:`~.losses.Loss`-like object (``value``, ``error``) that the e-prop
and BPTT rules take unchanged, and ``target(batch)`` what it compares with.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError, require_choice
from .losses import Loss

OBJECTIVES = ("motor", "hand", "hand_gradient")
INFORMATION = {"motor": frozenset({"motor_targets"}),
               "hand": frozenset({"target_path", "produced_path"}),
               "hand_gradient": frozenset({"target_path", "produced_path", "plant_jacobian"})}


@dataclass(frozen=True)
class HandLoss:
    """E = ½ Σ mask·|plant.path(y) − p*|² (summed over batch, time and coordinates, as :class:`Loss`)."""

    plant: object  # task_families' plant: path(y), path_gradient(y, deviation)
    gradient: bool  # error = ∂E/∂y (True) or the deviation p − p* (False)

    def deviation(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.unsqueeze(-1) * (self.plant.path(y) - target)

    def value(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return 0.5 * (mask.unsqueeze(-1) * (self.plant.path(y) - target) ** 2).sum()

    def error(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        deviation = self.deviation(y, target, mask)
        return self.plant.path_gradient(y, deviation) if self.gradient else deviation


@dataclass(frozen=True)
class InnerObjective:
    kind: str = "motor"
    plant: object | None = None  # the family's plant (task_families: ArmTrials.plant); hand objectives need it

    def __post_init__(self):
        require_choice("inner.objective", self.kind, OBJECTIVES)
        if self.kind != "motor" and self.plant is None:
            raise ConfigError("inner.objective", f"{self.kind!r} needs a family with a plant (the arm families)")

    @property
    def information(self) -> frozenset[str]:
        return INFORMATION[self.kind]

    @property
    def target_key(self) -> str | None:
        """Where the target path lies in ``TaskBatch.extra`` (None without a plant)."""
        return None if self.plant is None else self.plant.target_key

    def target(self, batch) -> torch.Tensor:
        return batch.targets if self.kind == "motor" else batch.extra[self.plant.target_key]

    def loss(self):
        return Loss("mse") if self.kind == "motor" else HandLoss(self.plant, self.kind == "hand_gradient")
