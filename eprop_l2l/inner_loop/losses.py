"""Task losses E and their output errors ∂E/∂y^t — the causal quantity that feedback learning signals project.

E is summed over batch, time and outputs (Bellec et al. 2020: E = ½ Σ_{t,k} (y − y*)² and the cross-entropy
−Σ_{t,k} π*_k log π_k with π = softmax(y)), restricted to the time steps where ``mask`` is 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import require_choice

LOSSES = ("mse", "cross_entropy")


@dataclass(frozen=True)
class Loss:
    kind: str = "mse"

    def __post_init__(self):
        require_choice("loss", self.kind, LOSSES)

    def value(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.kind == "mse":
            return 0.5 * (mask.unsqueeze(-1) * (y - target) ** 2).sum()
        return -(mask.unsqueeze(-1) * target * torch.log_softmax(y, -1)).sum()

    def error(self, y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """∂E/∂y for one step (``[B, K]``, mask ``[B]``) or a whole trial (``[B, T, K]``, mask ``[B, T]``)."""
        if self.kind == "mse":
            return mask.unsqueeze(-1) * (y - target)
        return mask.unsqueeze(-1) * (torch.softmax(y, -1) - target)
