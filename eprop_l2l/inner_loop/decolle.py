"""DECOLLE-style learning in a feedforward spiking network (Kaiser, Mostafa & Neftci 2020): every layer learns
from its own local loss through a fixed random readout, and no gradient crosses a layer.

Layer l predicts the target by its local readout (:class:`~eprop_l2l.error_modules.local_readouts.LocalReadouts`),
``y_l^t = κ y_l^{t-1} + s_o·G_l z_l^t`` (the last layer: the network's own readout, which learns by its exact
delta rule), and its weights change by the gradient of its local loss E_l = loss(y_l) with the layer's input
held constant and the reset path stopped: ``ΔW_l = Σ_t F_κ^rev(s_o G_lᵀ err_l)^t · ψ_l^t · F_α(s_l·z_{l-1})^t``,
``err_l = ∂E_l/∂y_l`` — the layer's eligibility (:mod:`.layerwise`) times its own learning signal. That is the
exact gradient of E_l with respect to W_l for inputs detached (``tests/test_feedforward.py``).
"""

from __future__ import annotations

import torch

from ..cells.base import Params
from ..error_modules.feedback import Feedback
from .eprop import DEFAULT_PLASTIC, EpropResult, readout_grads
from .layerwise import layer_grads, rate_loss
from .losses import Loss
from .regularization import RateRegularizer


def decolle_grads(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                  readouts, readout_params: Params | None = None, *, regularizer: RateRegularizer | None = None,
                  plastic: tuple[str, ...] = DEFAULT_PLASTIC, fast: bool = False) -> EpropResult:
    """One trial and every layer's DECOLLE update for the ``plastic`` weights; ``readouts`` is a
    ``LocalReadouts`` with its fixed ``readout_params`` (``g_ro_{l}``). The loss reported is the network's."""
    trajectory, y = network.run(params, x, fast=fast)
    view = {**params, **(readout_params or {})}
    error = loss.error(y, target, mask)
    signals = []
    for index, layer in enumerate(trajectory.layers):
        local, weights = readouts.local_readout(index), readouts.weights(view, index)
        err = error if local is network.readout else loss.error(local.run(weights, layer.outputs), target, mask)
        # the local readout's transpose with its input scale: ∂E_l/∂z_l^t before the readout's filter
        signals.append(Feedback("symmetric", local.n_in, local.n_out).for_readout(local).signal(weights, err))
    grads = layer_grads(network, params, trajectory, x, signals, network.readout.kappa, regularizer, plastic)
    grads.update(readout_grads(network.readout, params, trajectory.outputs, error,
                               tuple(n for n in plastic if n in ("w_out", "b_out")), per_task=False))
    value = loss.value(y, target, mask) + rate_loss(regularizer, trajectory)
    return EpropResult(grads, value, y, trajectory, None)
