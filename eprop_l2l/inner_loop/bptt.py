"""Backpropagation through time of the same cells — the exact-gradient baseline, and (``paths="local"``) the
autodiff form of e-prop: with previous spikes detached where they reach other neurons and the own reset
(Bellec et al. 2020, Suppl. S1.1), BPTT returns exactly e-prop's update with the true partial learning signal
∂E/∂z^t = W^outᵀ·(readout-filtered error), i.e. symmetric feedback with κ-filtered traces."""

from __future__ import annotations

import torch

from ..cells.base import Params, mask_self_connections
from ..cells.linalg import is_per_task
from .eprop import DEFAULT_PLASTIC
from .losses import Loss
from .regularization import RateRegularizer


def trial_loss(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               paths: str = "full", fast: bool = False) -> torch.Tensor:
    """Task loss + rate regulariser of one trial, as a differentiable function of ``params``."""
    trajectory, y = network.run(params, x, paths=paths, fast=fast)
    value = loss.value(y, target, mask)
    if regularizer is not None:
        value = value + regularizer.loss(trajectory.outputs, is_per_task(params["w_rec"]))
    return value


def bptt_grads(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               plastic: tuple[str, ...] = DEFAULT_PLASTIC, paths: str = "full",
               create_graph: bool = False, fast: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """dE/dW for ``plastic`` by autograd; ``create_graph`` keeps it differentiable (MAML-style inner steps).
    ``fast`` uses the spiking loop's hand-written backward (first order only: not with ``create_graph``)."""
    if fast and create_graph:
        raise ValueError("bptt_grads: fast=True gives first-order gradients only; use create_graph without it")
    names = [n for n in plastic if n in params]
    leaves = {n: params[n] if params[n].requires_grad else params[n].detach().requires_grad_() for n in names}
    value = trial_loss(network, {**params, **leaves}, x, target, mask, loss, regularizer, paths, fast)
    grads = torch.autograd.grad(value, list(leaves.values()), create_graph=create_graph)
    return {n: mask_self_connections(network.cell, n, g) for n, g in zip(names, grads, strict=True)}, value
