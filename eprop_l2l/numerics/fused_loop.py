"""The spiking time loop (LIF / ALIF) as one autograd node with a hand-written backward.

Autograd records ~40 small tensors per step of the reference loop (``simulate`` over ``cell.step``) and
replays them one node at a time; at the sizes of learning-to-learn (B·N ≈ 10⁴, T = 500) the backward is
dominated by that per-node overhead (BPTT ≈ 10× the forward, benchmarks/README.md). Here the forward runs the
same equations without recording, saving only v, a, z and the refractory counter, and the backward is the
exact reverse-mode recursion of those equations (for every ``paths``; the native kernel has codes for "full",
"no_reset" and "local", the Python recursion below serves "internal"):

    δz^t = ∂E/∂z^t + s·W^recᵀ δv^{t+1} [not "local", "internal"] − v_th δv^{t+1} [only "full", "internal"] + δa^{t+1}
    δa^t = ∂E/∂a^t + ρ δa^{t+1} − β ψ^t δz^t
    δv^t = ∂E/∂v^t + α δv^{t+1} + ψ^t δz^t
    ∂E/∂I^t = δv^t,   ∂E/∂W^rec = s Σ_t δv^t z^{t-1ᵀ}

with ψ the pseudo-derivative of the spike function (zero while refractory). It is a first-order backward
(``once_differentiable``): e-prop's inner update is an explicit formula, so meta-training never differentiates
this backward itself. Forward-mode transforms (``jvp``) and double backward use the reference loop; the tests
hold both equal.
"""

from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from . import native
from .linalg import is_per_task, sparse_input_product_t
from .native import SURROGATE_CODES

PATH_CODES = {"full": 0, "no_reset": 1, "local": 2}


def _rec(w: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    return (w @ z.unsqueeze(-1)).squeeze(-1) if is_per_task(w) else z @ w.mT


def _rec_transposed(w: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return (w.mT @ d.unsqueeze(-1)).squeeze(-1) if is_per_task(w) else d @ w


class _SpikingLoop(torch.autograd.Function):
    @staticmethod
    def forward(ctx, currents, w_rec, v0, a0, z0, ref0, cell, adaptive, paths):
        if native.usable(currents, w_rec):
            padded = _native_forward(cell, currents, w_rec, v0, a0, z0, ref0, adaptive)
        else:  # the values come from the cell's own step (no second copy of the dynamics), unrecorded
            params = {"w_rec": w_rec}
            state = cell.state_record(v0, a0, z0, ref0)
            states = [state]
            for t in range(currents.shape[1]):
                state, _ = cell.step_current(params, state, currents[:, t], paths)
                states.append(state)
            padded = type(state)(*(torch.stack(f, 1) for f in zip(*states, strict=True)))
        ctx.save_for_backward(w_rec, padded.v, padded.z, padded.ref, *([padded.a] if adaptive else []))
        ctx.cell, ctx.adaptive, ctx.paths = cell, adaptive, paths
        ctx.mark_non_differentiable(padded.ref)
        ctx.set_materialize_grads(False)  # unused outputs (often v) arrive as None, not as zero tensors
        return tuple(padded)

    @staticmethod
    @once_differentiable
    def backward(ctx, *grads):
        cell, adaptive, paths = ctx.cell, ctx.adaptive, ctx.paths
        saved = ctx.saved_tensors
        w_rec, v_pad, z_pad, ref_pad = saved[:4]
        a_pad = saved[4] if adaptive else None
        if adaptive:
            g_v, g_a, g_z, _ = grads
        else:
            g_v, g_z, _ = grads
            g_a = None
        if native.usable(v_pad, w_rec) and paths in PATH_CODES:  # the kernel knows the paths it has a code for
            delta_v, dz0, da0 = _native_backward(cell, w_rec, v_pad, a_pad, ref_pad, g_v, g_z, g_a, paths)
            return _parameter_grads(cell, w_rec, delta_v, z_pad, dz0, da0 if adaptive else None)
        steps = v_pad.shape[1] - 1
        alpha, v_th, s = cell.spec.alpha, cell.spec.v_th, cell.spec.input_scale
        rho = cell.spec.rho if adaptive else 0.0
        beta = cell.beta_vector(v_pad) if adaptive else None
        zeros = torch.zeros_like(v_pad[:, 0])
        g_v = zeros.new_zeros(v_pad.shape) if g_v is None else g_v
        g_z = zeros.new_zeros(z_pad.shape) if g_z is None else g_z
        if adaptive and g_a is None:
            g_a = zeros.new_zeros(a_pad.shape)
        # pseudo-derivative of every step at once, through the same function as the closed forms
        state_like = cell.state_record(v_pad, a_pad, z_pad, ref_pad)
        psi = cell.psi(None, state_like)
        delta_v = torch.empty_like(v_pad)  # δv^t for t = 0..T (index 0: the initial state)
        dv_next, da_next = zeros, zeros
        for t in range(steps, -1, -1):
            dz = g_z[:, t].clone()
            if t < steps:
                if paths not in ("local", "internal"):  # the coupling to the other neurons
                    dz += s * _rec_transposed(w_rec, dv_next)
                if paths in ("full", "internal"):  # the own reset
                    dz -= v_th * dv_next
                if adaptive:
                    dz += da_next
            if adaptive:
                da = g_a[:, t] + rho * da_next
                if t > 0:
                    da = da - beta * psi[:, t] * dz
                da_next = da
            dv = g_v[:, t] + alpha * dv_next
            if t > 0:
                dv = dv + psi[:, t] * dz
            delta_v[:, t] = dv
            dv_next = dv
            if t == 0:
                dz0 = dz
        return _parameter_grads(cell, w_rec, delta_v, z_pad, dz0, da_next if adaptive else None)


def _parameter_grads(cell, w_rec, delta_v, z_pad, dz0, grad_a0):
    """∂E/∂I^t = δv^t and ∂E/∂W^rec = s Σ_t δv^t z^{t-1ᵀ} (one matrix product over the trial)."""
    s = cell.spec.input_scale
    grad_currents = delta_v[:, 1:]
    z_prev = z_pad[:, :-1]
    if is_per_task(w_rec):
        grad_w = s * (grad_currents.mT @ z_prev)
    else:
        grad_w = s * sparse_input_product_t(z_prev, grad_currents).mT
    return grad_currents, grad_w, delta_v[:, 0], grad_a0, dz0, None, None, None, None


def _constants(cell, adaptive: bool) -> tuple:
    """(α, v_th, s, n_ref, ρ) in the kernels' argument order."""
    spec = cell.spec
    return spec.alpha, spec.v_th, spec.input_scale, spec.n_ref, spec.rho if adaptive else 0.0


def _native_forward(cell, currents, w_rec, v0, a0, z0, ref0, adaptive):
    beta = cell.beta_vector(currents) if adaptive else None
    v, a, z, ref = native.module().spiking_forward(currents, w_rec, v0, a0 if adaptive else None, z0, ref0, beta,
                                                   *_constants(cell, adaptive))
    return cell.state_record(v, a if adaptive else None, z, ref)


def _native_backward(cell, w_rec, v_pad, a_pad, ref_pad, g_v, g_z, g_a, paths):
    adaptive = a_pad is not None
    beta = cell.beta_vector(v_pad) if adaptive else None
    return native.module().spiking_backward(
        g_v, g_z, g_a if adaptive else None, w_rec, v_pad, a_pad, ref_pad, beta, *_constants(cell, adaptive),
        cell.spec.gamma_pd, SURROGATE_CODES[cell.spec.surrogate], PATH_CODES[paths])


def spiking_loop(cell, params, currents: torch.Tensor, state0, paths: str = "full"):
    """Padded state record ``[B, T+1, ...]`` of a LIF or ALIF cell driven by ``currents [B, T, n_rec]``."""
    if not getattr(cell, "has_fused_loop", False):  # its backward and kernels are LIF/ALIF's equations only
        raise TypeError(f"the fused spiking loop computes LIF/ALIF dynamics, not {type(cell).__name__}'s")
    adaptive = hasattr(state0, "a")
    a0 = state0.a if adaptive else None
    out = _SpikingLoop.apply(currents, params["w_rec"], state0.v, a0, state0.z, state0.ref, cell, adaptive, paths)
    if adaptive:
        v, a, z, ref = out
        return cell.state_record(v, a, z, ref)
    v, z, ref = out
    return cell.state_record(v, None, z, ref)
