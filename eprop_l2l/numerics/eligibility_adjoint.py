"""The reverse-time adjoint of a neuron's eligibility vector: what ``cell.adjoint`` returns, up to the input
scale, for the fused e-prop update (docs/equations.md, "The fused adjoint").

With ψ the pseudo-derivative and S the (filtered) learning signal of each neuron ``[B, T, N]``, backwards in time
from λ^T = 0:

* factorised cells (LIF, rate units; eligibility ψ^t·F_α(pre)^t):  λ_v^t = ψ^t S^t + α λ_v^{t+1}
* adaptive cells (ALIF, per-neuron β, 0 for the non-adaptive ones; the eligibility's 2×2 recursion):

      λ_a^t = −β ψ^t S^t + (ρ − β ψ^t) λ_a^{t+1},     λ_v^t = ψ^t (S^t + λ_a^{t+1}) + α λ_v^{t+1}

:func:`reference_eligibility_adjoint` writes it with the library's scans (any device, any transform,
differentiable to any order). On CPU one native pass computes it — whole-trial tensor operations take three
passes over ``[B, T, N]`` (factorised) or about eleven (adaptive) — with its own reverse mode, which runs forwards
in time:

    U_v^t = ḡ^t + α U_v^{t−1},   U_a^t = ψ^{t−1} U_v^{t−1} + (ρ − β ψ^{t−1}) U_a^{t−1},   W = U_v − β U_a,
    ∂/∂S^t = ψ^t W^t,   ∂/∂ψ^t = (S^t + λ_a^{t+1}) W^t        (factorised: U_a = 0, λ_a = 0).

Differentiated twice (``create_graph``), the reverse mode differentiates the reference instead.
"""

from __future__ import annotations

import torch

from . import native
from .filters import anticausal_filter, scan


def reference_eligibility_adjoint(psi: torch.Tensor, signal: torch.Tensor, alpha: float, rho: float = 0.0,
                                  beta: torch.Tensor | None = None) -> torch.Tensor:
    """λ_v from whole-trial scans: the reference, and the evaluation off the native path."""
    if beta is None:
        return anticausal_filter(psi * signal, alpha)
    lam_a = scan(-beta * psi * signal, rho - beta * psi, reverse=True)  # λ_a^t, t = 0..T-1; λ_a^T = 0
    lam_a_next = torch.cat([lam_a[:, 1:], torch.zeros_like(lam_a[:, :1])], 1)
    return anticausal_filter(psi * (signal + lam_a_next), alpha)


def eligibility_adjoint(psi: torch.Tensor, signal: torch.Tensor, alpha: float, rho: float = 0.0,
                        beta: torch.Tensor | None = None) -> torch.Tensor:
    """λ_v ``[B, T, N]`` for ψ and S ``[B, T, N]``; ``beta`` ``[N]`` (with ``rho``) for adaptive cells."""
    if not _native_applies(psi, signal, beta):
        return reference_eligibility_adjoint(psi, signal, alpha, rho, beta)
    if torch.is_grad_enabled() and (psi.requires_grad or signal.requires_grad):
        return _NativeEligibilityAdjoint.apply(psi, signal, beta, alpha, rho)[0]
    return native.module().eligibility_adjoint(psi, signal, beta, alpha, rho, False)[0]


def _native_applies(psi: torch.Tensor, signal: torch.Tensor, beta: torch.Tensor | None) -> bool:
    if psi.dim() != 3 or psi.shape != signal.shape or psi.dtype != signal.dtype:
        return False
    if beta is not None and (beta.shape != psi.shape[-1:] or beta.dtype != psi.dtype or beta.requires_grad):
        return False
    return native.usable(psi, signal, beta)


class _NativeEligibilityAdjoint(torch.autograd.Function):
    """The native pass; its second output, λ_a^{t+1} (adaptive cells), is kept for the reverse mode."""

    @staticmethod
    def forward(psi, signal, beta, alpha, rho):
        lam_v, ahead = native.module().eligibility_adjoint(psi, signal, beta, alpha, rho, True)
        return lam_v, ahead

    @staticmethod
    def setup_context(ctx, inputs, output):
        psi, signal, beta, alpha, rho = inputs
        if output[1] is not None:
            ctx.mark_non_differentiable(output[1])
        ctx.alpha, ctx.rho = alpha, rho
        ctx.save_for_backward(psi, signal, beta, output[1])

    @staticmethod
    def backward(ctx, grad, _):
        psi, signal, beta, ahead = ctx.saved_tensors
        if torch.is_grad_enabled():  # differentiated again: autograd through the reference, same inputs
            leaves = [t if t.requires_grad else t.detach().requires_grad_() for t in (psi, signal)]
            lam_v = reference_eligibility_adjoint(*leaves, ctx.alpha, ctx.rho, beta)
            grad_psi, grad_signal = torch.autograd.grad(lam_v, leaves, grad, create_graph=True)
        else:
            grad_signal, grad_psi = native.module().eligibility_adjoint_backward(
                psi, signal, ahead, grad.contiguous(), beta, ctx.alpha, ctx.rho)
        return grad_psi, grad_signal, None, None, None
