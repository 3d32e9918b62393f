"""The native eligibility adjoint (one reverse pass per task, own reverse mode) against the reference written
with the library's scans: values, first-order gradients by the native reverse mode, second order through the
reference, on strided trajectory views, for factorised (LIF) and adaptive (ALIF) cells."""

from __future__ import annotations

import pytest
import torch

from eprop_l2l.numerics import native
from eprop_l2l.numerics.eligibility_adjoint import eligibility_adjoint, reference_eligibility_adjoint

from .builders import relative_error

ALPHA, RHO = 0.95, 0.995


def _inputs(adaptive: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    padded = torch.randn(3, 41, 7, generator=g, dtype=torch.float64)  # ψ is read from a [B, T+1, N] record
    signal = torch.randn(3, 40, 7, generator=g, dtype=torch.float64)
    beta = None
    if adaptive:
        beta = torch.rand(7, generator=g, dtype=torch.float64)
        beta[:3] = 0.0  # mixed population: the first neurons do not adapt
    return padded, signal, beta


def _grads(fn, padded, signal, probe):
    leaves = [padded.clone().requires_grad_(), signal.clone().requires_grad_()]
    out = fn(leaves[0][:, 1:], leaves[1])
    return out, torch.autograd.grad((out * probe).sum(), leaves)


@pytest.mark.parametrize("adaptive", [False, True])
def test_native_adjoint_and_its_reverse_mode_equal_the_reference(adaptive):
    assert native.module() is not None  # the comparison needs the kernel
    padded, signal, beta = _inputs(adaptive)
    probe = torch.randn(3, 40, 7, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    out, grads = _grads(lambda p, s: eligibility_adjoint(p, s, ALPHA, RHO, beta), padded, signal, probe)
    with native.disabled():
        ref, ref_grads = _grads(lambda p, s: reference_eligibility_adjoint(p, s, ALPHA, RHO, beta), padded, signal,
                                probe)
    assert relative_error(out, ref) <= 1e-13
    for got, want in zip(grads, ref_grads, strict=True):
        assert relative_error(got, want) <= 1e-13
    with torch.no_grad():  # the no-grad path (no λ_a kept) gives the same numbers
        assert relative_error(eligibility_adjoint(padded[:, 1:], signal, ALPHA, RHO, beta), ref) <= 1e-13


@pytest.mark.parametrize("adaptive", [False, True])
def test_native_adjoint_is_differentiable_twice(adaptive):
    padded, signal, beta = _inputs(adaptive, seed=1)
    psi = padded[:, 1:8].clone().requires_grad_()
    sig = signal[:, :7].clone().requires_grad_()
    torch.autograd.gradcheck(lambda p, s: eligibility_adjoint(p, s, ALPHA, RHO, beta), (psi, sig))
    torch.autograd.gradgradcheck(lambda p, s: eligibility_adjoint(p, s, ALPHA, RHO, beta), (psi, sig))


def test_adaptive_adjoint_with_beta_zero_is_the_factorised_one():
    padded, signal, _ = _inputs(False, seed=2)
    zero = torch.zeros(7, dtype=torch.float64)
    adaptive = eligibility_adjoint(padded[:, 1:], signal, ALPHA, RHO, zero)
    factorised = eligibility_adjoint(padded[:, 1:], signal, ALPHA)
    assert relative_error(adaptive, factorised) <= 1e-15
    # and the factorised adjoint is the reverse α-filter of ψS, written out step by step
    psi, expected, acc = padded[:, 1:], torch.zeros_like(signal), torch.zeros_like(signal[:, 0])
    for t in range(signal.shape[1] - 1, -1, -1):
        acc = psi[:, t] * signal[:, t] + ALPHA * acc
        expected[:, t] = acc
    assert relative_error(factorised, expected) <= 1e-14
