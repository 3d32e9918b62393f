"""Firing-rate regularisation (Bellec et al. 2020, Methods): E_reg = (c/2) Σ_j (f̄_j − f*)².

f̄_j is the neuron's mean spike count per step over the trial, and over the batch when the weights are shared
(with per-task fast weights each task has its own f̄ and the E_reg of the tasks add up). Its e-prop gradient
is Σ_t ∂E_reg/∂z_j^t · e_ji^t with ∂E_reg/∂z_j^t = c (f̄_j − f*) / n, n = T (per task) or T·B (shared),
which enters the rule as a learning signal applied to the *unfiltered* trace.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass

import torch

from ..errors import require_non_negative, require_positive
from ..units import per_step


@dataclass(frozen=True)
class RateRegularizer:
    coefficient: float = 0.0
    target_hz: float = 10.0
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms)

    def __post_init__(self):
        require_non_negative("regularization.coefficient", self.coefficient)
        require_non_negative("regularization.target_hz", self.target_hz)
        require_positive("regularization.dt_ms", self.dt_ms)

    @property
    def target_per_step(self) -> float:
        return per_step(self.target_hz, self.dt_ms)

    def loss_from_rate(self, rate: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.coefficient * ((rate - self.target_per_step) ** 2).sum()

    def signal_from_rate(self, rate: torch.Tensor, n_samples: int) -> torch.Tensor:
        """∂E_reg/∂z_j^t for every step t; ``n_samples`` is the number of steps the rate averages over."""
        return self.coefficient * (rate - self.target_per_step) / n_samples

    @staticmethod
    def mean_rate(z: torch.Tensor, per_task: bool) -> torch.Tensor:
        return z.mean(1) if per_task else z.mean((0, 1))

    def loss(self, z: torch.Tensor, per_task: bool) -> torch.Tensor:
        return self.loss_from_rate(self.mean_rate(z, per_task))

    def signal(self, z: torch.Tensor, per_task: bool) -> torch.Tensor:
        """Constant in time: ``[B, 1, N]`` (per task) or ``[1, 1, N]`` (shared weights)."""
        n = z.shape[1] * (1 if per_task else z.shape[0])
        s = self.signal_from_rate(self.mean_rate(z, per_task), n)
        return s.unsqueeze(-2) if per_task else s.reshape(1, 1, -1)
