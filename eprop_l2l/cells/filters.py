"""Exponential filters over the time axis of ``[B, T, ...]`` tensors.

``F_decay(x)^t = decay · F^{t-1} + x^t`` is the low-pass filter of the e-prop papers (z̄ = F_α(z), the leaky
readout F_κ). Its time-reversed twin moves κ-filtering from eligibility traces onto learning signals
(``Σ_t L^t F_κ(e)^t = Σ_t F_κ^rev(L)^t e^t``).

Two evaluations of the same sum, chosen by size: a plain recursion over time for wide slices (one time step
of ``[32, 400]``: 10 ms for T = 500, where a Toeplitz product would cost T² multiply-adds per entry), and one
``[T, T]`` lower-triangular Toeplitz matrix product for narrow ones such as readouts (``[32, 2]``: one BLAS
call instead of 2·T tiny ops).
"""

from __future__ import annotations

from functools import lru_cache

import torch

NARROW = 1024  # time slices with at most this many entries use the Toeplitz product
MAX_TOEPLITZ_STEPS = 4096


@lru_cache(maxsize=16)
def _toeplitz(steps: int, decay: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """K[t, s] = decay^(t−s) for s ≤ t, else 0."""
    lag = torch.arange(steps, device=device).unsqueeze(1) - torch.arange(steps, device=device).unsqueeze(0)
    powers = torch.tensor(decay, dtype=torch.float64, device=device) ** lag.clamp(min=0).to(torch.float64)
    return torch.where(lag >= 0, powers, torch.zeros((), dtype=torch.float64, device=device)).to(dtype)


def _narrow(x: torch.Tensor, decay) -> bool:
    return isinstance(decay, float) and x[:, 0].numel() <= NARROW and x.shape[1] <= MAX_TOEPLITZ_STEPS


def causal_filter(x: torch.Tensor, decay, *, initial: torch.Tensor | None = None) -> torch.Tensor:
    """``y^t = decay · y^{t-1} + x^t`` along dim 1; ``y^{-1} = initial`` (default 0). ``decay`` is a float or
    a tensor broadcastable to one time slice (e.g. per-neuron decays ``[N]``)."""
    if _narrow(x, decay):
        steps = x.shape[1]
        kernel = _toeplitz(steps, decay, x.dtype, x.device)
        y = (kernel @ x.flatten(2)).reshape(x.shape)
        if initial is not None:
            ramp = kernel[:, 0] * decay  # decay^(t+1)
            y = y + ramp.reshape(1, steps, *([1] * (x.dim() - 2))) * initial.unsqueeze(1)
        return y
    acc = torch.zeros_like(x[:, 0]) if initial is None else initial
    out = []
    for t in range(x.shape[1]):
        acc = x[:, t] + decay * acc
        out.append(acc)
    return torch.stack(out, 1)


def anticausal_filter(x: torch.Tensor, decay) -> torch.Tensor:
    """``y^t = x^t + decay · y^{t+1}`` along dim 1, with ``y^T = 0``: the time reverse of :func:`causal_filter`."""
    if _narrow(x, decay):
        kernel = _toeplitz(x.shape[1], decay, x.dtype, x.device)
        return (kernel.mT @ x.flatten(2)).reshape(x.shape)
    acc = torch.zeros_like(x[:, 0])
    out = []
    for t in range(x.shape[1] - 1, -1, -1):
        acc = x[:, t] + decay * acc
        out.append(acc)
    out.reverse()
    return torch.stack(out, 1)
