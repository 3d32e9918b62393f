"""Exact real-time recurrent learning (Williams & Zipser 1989) — the forward-mode reference.

The network state s^t (every floating field of the cell state, and the readout y^t) is a vector; per step

    M^t = J^t M^{t-1} + M̄^t,     J^t = ∂s^t/∂s^{t-1} (full Jacobian, all neuron-to-neuron paths),
                                 M̄^t = ∂s^t/∂θ,       dE/dθ = Σ_t ∂E^t/∂s^t · M^t

with J and M̄ taken from ``cell.step`` and ``readout.step`` by ``torch.func.jacfwd``. Memory O(S·P) and time
O(T·S²·P) for S state entries and P parameters: small networks only — it is the ground truth that BPTT and
e-prop (its diagonal approximation, Zenke & Neftci 2021) are tested against.
"""

from __future__ import annotations

import torch
from torch.func import jacfwd

from ..cells.base import Params, mask_self_connections
from ..numerics.linalg import is_per_task
from .eprop import DEFAULT_PLASTIC
from .losses import Loss
from .regularization import RateRegularizer


def _ravel(tensors):
    shapes = [t.shape for t in tensors]
    flat = torch.cat([t.reshape(-1) for t in tensors])

    def unravel(vector):
        out, offset = [], 0
        for shape in shapes:
            size = shape.numel()
            out.append(vector[offset : offset + size].reshape(shape))
            offset += size
        return out

    return flat, unravel


def rtrl_grads(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               plastic: tuple[str, ...] = DEFAULT_PLASTIC) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    cell, readout = network.cell, network.readout
    names = [n for n in plastic if n in params]
    fixed = {k: v for k, v in params.items() if k not in names}
    theta, unravel_theta = _ravel([params[n].detach() for n in names])
    batch = x.shape[0]
    state0 = cell.init_state(batch, dtype=x.dtype, device=x.device)
    state_type = type(state0)
    s, unravel_s = _ravel([*state0, readout.init_state(batch, dtype=x.dtype, device=x.device)])
    n_cell = len(state0)

    def transition(theta_, s_, x_t):
        p = {**fixed, **dict(zip(names, unravel_theta(theta_), strict=True))}
        fields = unravel_s(s_)
        state, z = cell.step(p, state_type(*fields[:n_cell]), x_t)
        y = readout.step(p, fields[n_cell], z)
        return _ravel([*state, y])[0]

    def output_parts(s_):
        fields = unravel_s(s_)
        return cell.output(state_type(*fields[:n_cell])), fields[n_cell]

    def step_loss(s_, t):
        _, y = output_parts(s_)
        return loss.value(y.unsqueeze(1), target[:, t : t + 1], mask[:, t : t + 1])

    sensitivity = torch.zeros(s.numel(), theta.numel(), dtype=x.dtype, device=x.device)  # M
    grad = torch.zeros_like(theta)
    value = torch.zeros((), dtype=x.dtype, device=x.device)
    spike_sensitivity = 0.0  # Σ_t dz^t/dθ, for the rate regulariser (a function of the trial mean)
    spikes = []
    for t in range(x.shape[1]):
        x_t = x[:, t]
        jac_s = jacfwd(transition, argnums=1)(theta, s, x_t)
        jac_theta = jacfwd(transition, argnums=0)(theta, s, x_t)
        sensitivity = jac_s @ sensitivity + jac_theta
        s = transition(theta, s, x_t)
        grad = grad + jacfwd(step_loss)(s, t) @ sensitivity
        value = value + step_loss(s, t)
        if regularizer is not None:
            z_of_s = jacfwd(lambda s_: output_parts(s_)[0].reshape(-1))(s)  # [B·N, S]
            spike_sensitivity = spike_sensitivity + z_of_s @ sensitivity
            spikes.append(output_parts(s)[0])
    if regularizer is not None:
        z = torch.stack(spikes, 1)
        per_task = is_per_task(params["w_rec"])
        signal = regularizer.signal(z, per_task).expand(z.shape[0], 1, z.shape[2])[:, 0]  # [B, N]
        grad = grad + signal.reshape(-1) @ spike_sensitivity
        value = value + regularizer.loss(z, per_task)
    grads = dict(zip(names, unravel_theta(grad), strict=True))
    return {n: mask_self_connections(cell, n, g) for n, g in grads.items()}, value
