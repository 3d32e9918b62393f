"""The spike non-linearity: a Heaviside step whose derivative is replaced by a pseudo-derivative.

One function serves everything: forward simulation, BPTT (backward), exact RTRL and the autodiff eligibility
traces (forward mode, ``jvp``), ``vmap``, and the outer loop's second-order gradients (the backward is itself
differentiable). The same :func:`pseudo_derivative` is what the closed-form e-prop traces call, so the two can
never drift apart.
"""

from __future__ import annotations

import torch

from ..errors import require_choice, require_positive
from ..numerics.native import SURROGATE_CODES

SURROGATES = tuple(SURROGATE_CODES)  # the shapes below, each with the number the native kernels take


def pseudo_derivative(v_scaled: torch.Tensor, gamma: float, shape: str = "triangle") -> torch.Tensor:
    """dz/d(v_scaled) for the surrogate ``shape``; ``v_scaled = (v - A) / v_th``.

    triangle (Bellec et al. 2020): γ · max(0, 1 - |v_scaled|).
    fast_sigmoid (Zenke & Ganguli 2018, SuperSpike): γ / (1 + |v_scaled|)².
    """
    if shape == "triangle":
        return gamma * torch.relu(1.0 - v_scaled.abs())
    if shape == "fast_sigmoid":
        return gamma / (1.0 + v_scaled.abs()) ** 2
    raise ValueError(f"surrogate: unknown shape {shape!r} (choose from {', '.join(SURROGATES)})")


class _SpikeFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(v_scaled: torch.Tensor, gamma: float, shape: str) -> torch.Tensor:
        return (v_scaled > 0).to(v_scaled.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output):
        v_scaled, gamma, shape = inputs
        ctx.save_for_backward(v_scaled)
        ctx.save_for_forward(v_scaled)
        ctx.gamma = gamma
        ctx.shape = shape

    @staticmethod
    def backward(ctx, grad_z):
        (v_scaled,) = ctx.saved_tensors
        return grad_z * pseudo_derivative(v_scaled, ctx.gamma, ctx.shape), None, None

    @staticmethod
    def jvp(ctx, v_scaled_tangent, gamma_tangent, shape_tangent):
        (v_scaled,) = ctx.saved_tensors
        return v_scaled_tangent * pseudo_derivative(v_scaled, ctx.gamma, ctx.shape)


def spike(v_scaled: torch.Tensor, gamma: float = 0.3, shape: str = "triangle") -> torch.Tensor:
    """z = H(v_scaled) with pseudo-derivative ``pseudo_derivative(v_scaled, gamma, shape)``."""
    return _SpikeFunction.apply(v_scaled, gamma, shape)


def validate_surrogate(prefix: str, gamma: float, shape: str) -> None:
    require_positive(f"{prefix}.gamma_pd", gamma)
    require_choice(f"{prefix}.surrogate", shape, SURROGATES)
