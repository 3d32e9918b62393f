"""Task metrics shared by training loops and evaluation."""

from __future__ import annotations

import torch


def normalised_mse(y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Σ mask·(y − y*)² / Σ mask·(y* − mean y*)²: 1 for the best constant output, 0 for a perfect fit."""
    m = mask.unsqueeze(-1)
    mean = (m * target).sum((0, 1)) / m.sum((0, 1))
    return (m * (y - target) ** 2).sum() / (m * (target - mean) ** 2).sum()


def classification_error(y: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Fraction of trials whose class, the argmax of the readout averaged over the masked steps, is wrong."""
    m = mask.unsqueeze(-1)
    decision = ((m * y).sum(1) / m.sum(1).clamp_min(1)).argmax(-1)
    label = ((m * target).sum(1)).argmax(-1)
    return (decision != label).to(y.dtype).mean()
