"""What the layer-wise rules of a feedforward network share (SuperSpike, :mod:`.superspike`; DECOLLE,
:mod:`.decolle`): each layer's update is its neurons' learning signal times the layer's eligibility traces,
contracted over the trial, ΔW_l = Σ_t F_κ^rev(L^l)^t · e_l^t with e_l^t = ψ_l^t · F_α(s·pre_l)^t — e-prop's
fused update (:func:`.eprop.recurrent_grads`) applied to one layer at a time, the layer's cell supplying ψ and
the trace (its ``adjoint``), and no signal ever crossing a layer inside the rule.
"""

from __future__ import annotations

import torch

from ..cells.base import Params
from ..cells.feedforward import FeedforwardTrajectory
from .eprop import recurrent_grads
from .regularization import RateRegularizer


def layer_grads(network, params: Params, trajectory: FeedforwardTrajectory, x: torch.Tensor,
                signals: list[torch.Tensor], kappa: float, regularizer: RateRegularizer | None,
                plastic: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The update of every plastic layer weight ``w_{l}`` from its layer's learning signal ``[B, T, n_l]``; the
    rate regulariser, if any, adds each layer's own signal to its unfiltered trace (as in e-prop)."""
    grads = {}
    for index, (name, cell, layer) in enumerate(zip(network.weight_names, network.layers, trajectory.layers,
                                                    strict=True)):
        if name not in plastic:
            continue
        reg = regularizer.signal(layer.outputs, False) if regularizer is not None else None
        grads[name] = recurrent_grads(cell, network.layer_params(params, index), layer,
                                      trajectory.presynaptic(index, x), signals[index], kappa, reg, ("w_in",),
                                      per_task=False)["w_in"]
    return grads


def rate_loss(regularizer: RateRegularizer | None, trajectory: FeedforwardTrajectory) -> torch.Tensor | float:
    """The rate regulariser's loss summed over the layers (0 without one)."""
    if regularizer is None:
        return 0.0
    return sum(regularizer.loss(layer.outputs, False) for layer in trajectory.layers)
