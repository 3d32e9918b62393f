"""Exponential filters over the time axis of ``[B, T, N]`` tensors.

``F_decay(x)^t = decay · F^{t-1} + x^t`` is the low-pass filter of the e-prop papers (z̄ = F_α(z), the leaky
readout F_κ). Its time-reversed twin moves κ-filtering from eligibility traces onto learning signals
(``Σ_t L^t F_κ(e)^t = Σ_t F_κ^rev(L)^t e^t``).

Both are computed blockwise: inside a block of ``block`` steps the filter is one small Toeplitz matrix product,
across blocks a short carry recursion. That is exact, keeps the autograd graph to ``T / block`` nodes instead of
``T``, and runs as a few large tensor operations.
"""

from __future__ import annotations

import torch


def _decay_tensor(decay, like: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(decay, dtype=like.dtype, device=like.device)


def causal_filter(x: torch.Tensor, decay, *, initial: torch.Tensor | None = None, block: int = 32) -> torch.Tensor:
    """``y^t = decay · y^{t-1} + x^t`` along dim 1 of ``x [B, T, N]``; ``y^{-1} = initial`` (default 0).

    ``decay`` is a float or a tensor broadcastable to ``[N]`` (per-neuron decays).
    """
    b, t_len = x.shape[0], x.shape[1]
    d = _decay_tensor(decay, x)
    per_neuron = d.dim() > 0
    n_blocks = -(-t_len // block)
    pad = n_blocks * block - t_len
    xb = torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x
    xb = xb.reshape(b, n_blocks, block, *x.shape[2:])
    steps = torch.arange(block, device=x.device)
    lag = (steps[:, None] - steps[None, :]).to(x.dtype)  # t - s
    lower = (lag >= 0).to(x.dtype)
    if per_neuron:
        # kernel[t, s, n] = decay_n^(t-s) for s <= t
        kernel = d ** lag.clamp(min=0).unsqueeze(-1) * lower.unsqueeze(-1)
        local = torch.einsum("tsn,bksn->bktn", kernel, xb)
        ramp = d ** (steps.to(x.dtype) + 1).unsqueeze(-1)  # [block, N]
    else:
        kernel = d ** lag.clamp(min=0) * lower
        local = torch.einsum("ts,bks...->bkt...", kernel, xb)
        ramp = (d ** (steps.to(x.dtype) + 1)).reshape(block, *([1] * (x.dim() - 2)))
    carry = initial if initial is not None else torch.zeros_like(x[:, 0])
    blocks = []
    for k in range(n_blocks):
        yk = local[:, k] + ramp * carry.unsqueeze(1)
        blocks.append(yk)
        carry = yk[:, -1]
    y = torch.stack(blocks, 1).reshape(b, n_blocks * block, *x.shape[2:])
    return y[:, :t_len] if pad else y


def anticausal_filter(x: torch.Tensor, decay, *, block: int = 32) -> torch.Tensor:
    """``y^t = x^t + decay · y^{t+1}`` along dim 1, with ``y^T = 0``: the time reverse of :func:`causal_filter`."""
    return causal_filter(x.flip(1), decay, block=block).flip(1)
