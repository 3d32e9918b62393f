"""Shape helpers shared by every cell and rule: shared weights ``[rows, n]`` or per-task fast weights
``[batch, rows, n]`` act the same way, and weight updates are contracted over time in one matrix product."""

from __future__ import annotations

import torch


def is_per_task(w: torch.Tensor, bias: bool = False) -> bool:
    """Per-task fast weights carry a leading task (batch) dimension: ``[B, rows, n]`` (or ``[B, rows]`` for a
    bias vector)."""
    return w.dim() == (2 if bias else 3)


def linear(w: torch.Tensor, x: torch.Tensor, add: torch.Tensor | None = None, scale: float = 1.0) -> torch.Tensor:
    """``add + scale·W x`` for x of shape ``[B, n]`` or ``[B, T, n]``; w of shape ``[rows, n]`` or
    ``[B, rows, n]`` (per-task). With ``add`` the product and the sum are one fused BLAS call for the per-step
    shapes (``addmm``/``baddbmm``), which is what the time loop uses."""
    if add is not None and x.dim() == 2:
        if not is_per_task(w):
            return torch.addmm(add, x, w.mT, alpha=scale)
        return torch.baddbmm(add.unsqueeze(-1), w, x.unsqueeze(-1), alpha=scale).squeeze(-1)
    if not is_per_task(w) or x.dim() == 3:
        out = x @ w.mT
    else:
        out = (w @ x.unsqueeze(-1)).squeeze(-1)
    if scale != 1.0:
        out = scale * out
    return out if add is None else add + out


def contract_time(post: torch.Tensor, pre: torch.Tensor, per_task: bool) -> torch.Tensor:
    """``Σ_t post_j^t pre_i^t`` from ``[B, T, rows]`` and ``[B, T, n]`` factors.

    ``per_task`` keeps one matrix per batch element ``[B, rows, n]`` (fast weights), otherwise the sum over the
    batch is returned ``[rows, n]``. Either way it is one batched matrix product: memory O(B·T·(rows+n)).
    The narrower factor goes first (transposed): ``(preᵀ post)ᵀ`` for input weights (n = 10 vs 400 rows) is
    3-4× faster on CPU BLAS than ``postᵀ pre``, the same numbers either way.
    """
    if not per_task:
        post, pre = post.flatten(0, 1), pre.flatten(0, 1)
    if pre.shape[-1] <= post.shape[-1]:
        return (pre.mT @ post).mT
    return post.mT @ pre


def outer(post: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
    """Per-step outer product ``[B, rows] × [B, n] → [B, rows, n]``."""
    return post.unsqueeze(-1) * pre.unsqueeze(-2)


def no_self_mask(n: int, dtype: torch.dtype, device: torch.device | None = None) -> torch.Tensor:
    """1 off the diagonal, 0 on it: recurrent spiking weights have no self-connections."""
    return 1.0 - torch.eye(n, dtype=dtype, device=device)
