"""SuperSpike-style online learning in a feedforward spiking network (Zenke & Ganguli 2018), every layer at once.

Network (:class:`~eprop_l2l.cells.feedforward.FeedforwardNetwork`), reset path stopped as in the project's other
rules (``paths="no_reset"``: the spike that resets a neuron acts on its membrane as a constant)::

    v_l^t = α v_l^{t-1} + s_l·W_l z_{l-1}^t − v_th z_l^{t-1}      z_0 := x,  z_l^t = H((v_l^t − v_th)/v_th)
    y^t   = κ y^{t-1} + s_o·W_out z_L^t + b                     err^t = ∂E/∂y^t

Each layer's weights change by ``ΔW_l = Σ_t F_κ^rev(L^l)^t · e_l^t`` with the layer's eligibility
``e_l^t = ψ_l^t · F_α(s_l·z_{l-1})^t`` (the cell's own trace; :mod:`.layerwise`) — equivalently
``Σ_t L^l,t · F_κ(e_l)^t``: the readout's filter applied to the product of the pseudo-derivative and the filtered
presynaptic trace, SuperSpike's eligibility. With ``rise_ms`` > 0 that filter is SuperSpike's double exponential
``F_κ ∘ F_ρ`` (ρ = exp(−dt/rise_ms)); the rule is then a smoothed estimate, no longer the gradient of this network
(whose readout does not rise).

The learning signal L^l (:class:`~eprop_l2l.error_modules.layer_feedback.LayerFeedback`) is ``symmetric``,
``L^L = s_o W_outᵀ err`` and ``L^l = s_{l+1} W_{l+1}ᵀ L^{l+1}``, or ``random`` (broadcast), ``L^l = B_l err``.

What it equals. The exact gradient has the same form with the true partial derivative
``L̂^l_t = ∂E/∂z_l^t`` (through the layers above, the reset path stopped)::

    L̂^L = s_o W_outᵀ F_κ^rev(err),   L̂^l = s_{l+1} W_{l+1}ᵀ δ_{l+1},   δ_{l+1} = adjoint of layer l+1 for L̂^{l+1}

(for LIF, ``δ_{l+1} = F_α^rev(ψ_{l+1} ⊙ L̂^{l+1})``: the upper layer's pseudo-derivative and membrane memory).

* One layer: L^L is L̂^L — the rule *is* the gradient (BPTT with ``paths="no_reset"``).
* Several layers, symmetric: the rule replaces each δ_{l+1} by L^{l+1} — the exact gradient of the network in
  which every layer above l passes its input on linearly and at once (ψ ≡ 1, α = 0 in the backward pass:
  ``∂z_{k}^t/∂z_{k-1}^t = s_k W_k``). The last layer's update stays exact.
* Broadcast with ``B_l = s_{l+1}W_{l+1}ᵀ ⋯ s_L W_Lᵀ · s_o W_outᵀ`` (the exact backward weights of that linear
  network) is the symmetric rule; a random B_l is direct feedback alignment.
"""

from __future__ import annotations

import math

import torch

from ..cells.base import Params
from ..errors import require_non_negative
from ..numerics.filters import anticausal_filter
from .eprop import DEFAULT_PLASTIC, EpropResult, readout_grads
from .layerwise import layer_grads, rate_loss
from .losses import Loss
from .regularization import RateRegularizer


def superspike_grads(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                     feedback, feedback_params: Params | None = None, *,
                     regularizer: RateRegularizer | None = None, plastic: tuple[str, ...] = DEFAULT_PLASTIC,
                     rise_ms: float = 0.0, fast: bool = False) -> EpropResult:
    """One trial and every layer's SuperSpike update (same sign as a gradient) for the ``plastic`` weights
    (``w_{l}``, ``w_out``, ``b_out``); ``feedback`` is a ``LayerFeedback`` with its ``feedback_params``."""
    require_non_negative("superspike.rise_ms", rise_ms)
    trajectory, y = network.run(params, x, fast=fast)
    error = loss.error(y, target, mask)
    signals = feedback.signals(network, {**params, **(feedback_params or {})}, error)
    if rise_ms > 0:
        rho = math.exp(-network.readout.dt_ms / rise_ms)
        signals = [anticausal_filter(signal, rho) for signal in signals]
    grads = layer_grads(network, params, trajectory, x, signals, network.readout.kappa, regularizer, plastic)
    grads.update(readout_grads(network.readout, params, trajectory.outputs, error,
                               tuple(n for n in plastic if n in ("w_out", "b_out")), per_task=False))
    value = loss.value(y, target, mask) + rate_loss(regularizer, trajectory)
    return EpropResult(grads, value, y, trajectory, None)
