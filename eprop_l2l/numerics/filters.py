"""Exponential filters over the time axis of ``[B, T, ...]`` tensors.

``F_decay(x)^t = decay · F^{t-1} + x^t`` is the low-pass filter of the e-prop papers (z̄ = F_α(z), the leaky
readout F_κ). Its time-reversed twin moves κ-filtering from eligibility traces onto learning signals
(``Σ_t L^t F_κ(e)^t = Σ_t F_κ^rev(L)^t e^t``).

Both directions are one primitive, :func:`scan` — ``y^t = x^t + d^t ⊙ y^{t∓1}`` with a constant, per-channel
or per-step decay — which also serves the cells' reverse-time adjoints. Its reverse mode is the opposite scan
(differentiable again, so second-order meta-gradients pass through it).

Evaluations, chosen by device and size: the native loop (:mod:`.native`, O(T) per channel) for CPU tensors;
elsewhere one ``[T, T]`` lower-triangular Toeplitz matrix product for narrow slices such as readouts
(``[32, 2]``: one BLAS call instead of 2·T tiny ops) and a plain recursion over time for wide ones (a Toeplitz
product would cost T² multiply-adds per entry).
"""

from __future__ import annotations

from functools import lru_cache

import torch

from . import native

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


def _as_channels(x: torch.Tensor, decay) -> torch.Tensor | None:
    """The decay as the native scan takes it — one entry, one per channel of a time slice, or one per step
    ``[B, T, ...]`` — or None where it must stay in Python (broadcast shapes, a decay that needs a gradient)."""
    if isinstance(decay, float):
        return torch.tensor([decay], dtype=x.dtype)
    if decay.requires_grad or decay.dtype != x.dtype:
        return None
    if decay.shape == x.shape:
        return decay.reshape(x.shape[0], x.shape[1], -1)
    if decay.shape == x.shape[2:]:
        return decay.reshape(-1)
    return None


class _Scan(torch.autograd.Function):
    """Native linear scan over ``[B, T, M]``; its backward is the opposite scan (itself differentiable)."""

    @staticmethod
    def forward(x, decay, reverse, initial):
        return native.module().linear_scan(x, decay, reverse, initial)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, decay, reverse, initial = inputs
        ctx.reverse = reverse
        ctx.per_step = decay.dim() == 3
        ctx.save_for_backward(decay, output, initial)

    @staticmethod
    def backward(ctx, grad_y):
        decay, y, initial = ctx.saved_tensors
        # adjoint of y^t = x^t + d^t y^{t-1} is u^t = ȳ^t + d^{t+1} u^{t+1} (and mirrored for the reverse scan)
        shifted = decay.roll(1 if ctx.reverse else -1, 1) if ctx.per_step else decay
        u = _Scan.apply(grad_y.contiguous(), shifted, not ctx.reverse, None)
        grad_decay = None
        if ctx.per_step and ctx.needs_input_grad[1]:
            neighbour = torch.zeros_like(y)
            if ctx.reverse:
                neighbour[:, :-1] = y[:, 1:]
            else:
                neighbour[:, 1:] = y[:, :-1]
                if initial is not None:
                    neighbour[:, 0] = initial
            grad_decay = u * neighbour
        grad_initial = None
        if initial is not None and ctx.needs_input_grad[3]:
            grad_initial = (decay[:, 0] if ctx.per_step else decay) * u[:, 0]
        return u, grad_decay, None, grad_initial


def _native_scan(x: torch.Tensor, decay, reverse: bool, initial: torch.Tensor | None) -> torch.Tensor | None:
    """The scan by the native kernel, or None where it does not apply (the caller recurses in Python)."""
    if x.dim() < 3 or not native.usable(x, initial):
        return None
    channels = _as_channels(x, decay)
    if channels is None:
        return None
    flat = x.reshape(x.shape[0], x.shape[1], -1)  # the kernel reads batch-strided views in place
    start = None if initial is None else initial.reshape(x.shape[0], -1)
    return _Scan.apply(flat, channels, reverse, start).reshape(x.shape)


def scan(x: torch.Tensor, decay, *, reverse: bool = False, initial: torch.Tensor | None = None) -> torch.Tensor:
    """``y^t = x^t + d^t ⊙ y^{t-1}`` along dim 1 (``reverse``: ``y^t = x^t + d^t ⊙ y^{t+1}``, ``y^T = 0``).

    ``decay`` is a float, a tensor broadcastable to one time slice (per channel), or a per-step tensor of
    ``x``'s shape (e.g. the 1 − βψ^t of an adaptive neuron's adjoint). ``initial`` is ``y^{-1}`` (forward
    scans only; default 0)."""
    if reverse and initial is not None:
        raise ValueError("scan: an initial value is only defined for a forward scan")
    y = _native_scan(x, decay, reverse, initial)
    return y if y is not None else _loop_scan(x, decay, reverse, initial)


def _loop_scan(x: torch.Tensor, decay, reverse: bool, initial: torch.Tensor | None) -> torch.Tensor:
    """:func:`scan` as a Python recursion over time (any device, any transform, any decay shape)."""
    per_step = torch.is_tensor(decay) and decay.dim() == x.dim() and decay.shape[:2] == x.shape[:2]
    acc = torch.zeros_like(x[:, 0]) if initial is None else initial
    steps = x.unbind(1)  # one stacking backward, not a whole-trial scatter per step
    decays = decay.unbind(1) if per_step else [decay] * len(steps)
    out = []
    for t in (range(len(steps) - 1, -1, -1) if reverse else range(len(steps))):
        acc = steps[t] + decays[t] * acc
        out.append(acc)
    if reverse:
        out.reverse()
    return torch.stack(out, 1)


def causal_filter(x: torch.Tensor, decay, *, initial: torch.Tensor | None = None) -> torch.Tensor:
    """``y^t = decay · y^{t-1} + x^t`` along dim 1; ``y^{-1} = initial`` (default 0). ``decay`` is a float or
    a tensor broadcastable to one time slice (e.g. per-neuron decays ``[N]``)."""
    y = _native_scan(x, decay, False, initial)
    if y is not None:
        return y
    if _narrow(x, decay):
        steps = x.shape[1]
        kernel = _toeplitz(steps, decay, x.dtype, x.device)
        y = (kernel @ x.flatten(2)).reshape(x.shape)
        if initial is not None:
            ramp = kernel[:, 0] * decay  # decay^(t+1)
            y = y + ramp.reshape(1, steps, *([1] * (x.dim() - 2))) * initial.unsqueeze(1)
        return y
    return _loop_scan(x, decay, False, initial)


def anticausal_filter(x: torch.Tensor, decay) -> torch.Tensor:
    """``y^t = x^t + decay · y^{t+1}`` along dim 1, with ``y^T = 0``: the time reverse of :func:`causal_filter`."""
    y = _native_scan(x, decay, True, None)
    if y is not None:
        return y
    if _narrow(x, decay):
        kernel = _toeplitz(x.shape[1], decay, x.dtype, x.device)
        return (kernel.mT @ x.flatten(2)).reshape(x.shape)
    return _loop_scan(x, decay, True, None)
