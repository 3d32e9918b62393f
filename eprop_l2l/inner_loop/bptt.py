"""Backpropagation through time of the same cells — the exact-gradient baseline, and (``paths="local"``) the
autodiff form of e-prop: with previous spikes detached where they reach other neurons and the own reset
(Bellec et al. 2020, Suppl. S1.1), BPTT returns exactly e-prop's update with the true partial learning signal
∂E/∂z^t = s·W^outᵀ·(readout-filtered error) (s: the readout's input scale), i.e. symmetric feedback with
κ-filtered traces."""

from __future__ import annotations

import torch

from ..cells.base import Params, mask_self_connections
from ..cells.linalg import is_per_task
from .eprop import DEFAULT_PLASTIC, EpropResult
from .losses import Loss
from .regularization import RateRegularizer


def _trial(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None,
           paths: str, fast: bool):
    trajectory, y = network.run(params, x, paths=paths, fast=fast)
    value = loss.value(y, target, mask)
    if regularizer is not None:
        value = value + regularizer.loss(trajectory.outputs, is_per_task(params["w_rec"]))
    return value, trajectory, y


def trial_loss(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               paths: str = "full", fast: bool = False) -> torch.Tensor:
    """Task loss + rate regulariser of one trial, as a differentiable function of ``params``."""
    return _trial(network, params, x, target, mask, loss, regularizer, paths, fast)[0]


def bptt_grads(network, params: Params, x, target, mask, loss: Loss, regularizer: RateRegularizer | None = None,
               plastic: tuple[str, ...] = DEFAULT_PLASTIC, paths: str = "full",
               create_graph: bool = False, fast: bool = False) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """dE/dW for ``plastic`` by autograd; ``create_graph`` keeps it differentiable (MAML-style inner steps).
    ``fast`` uses the spiking loop's hand-written backward (first order only: not with ``create_graph``)."""
    if fast and create_graph:
        raise ValueError("bptt_grads: fast=True gives first-order gradients only; use create_graph without it")
    result = bptt_result(network, params, x, target, mask, loss, plastic, regularizer, paths, create_graph, fast)
    return result.grads, result.loss


def bptt_result(network, params: Params, x, target, mask, loss: Loss, plastic: tuple[str, ...] = DEFAULT_PLASTIC,
                regularizer: RateRegularizer | None = None, paths: str = "full", create_graph: bool = False,
                fast: bool = False) -> EpropResult:
    """:func:`bptt_grads` with the trial's records, in the form of the e-prop rules' result (no learning
    signals). Computes the gradient even where autograd is globally off (evaluation of a MAML-style step)."""
    if fast and create_graph:
        raise ValueError("bptt_grads: fast=True gives first-order gradients only; use create_graph without it")
    names = [n for n in plastic if n in params]
    with torch.enable_grad():
        leaves = {n: params[n] if params[n].requires_grad else params[n].detach().requires_grad_() for n in names}
        value, trajectory, y = _trial(network, {**params, **leaves}, x, target, mask, loss, regularizer, paths, fast)
        grads = torch.autograd.grad(value, list(leaves.values()), create_graph=create_graph)
    grads = {n: mask_self_connections(network.cell, n, g) for n, g in zip(names, grads, strict=True)}
    if not create_graph:
        # nothing downstream differentiates through this trial: free its graph
        padded = type(trajectory.padded)(*(t.detach() for t in trajectory.padded))
        value, y, trajectory = value.detach(), y.detach(), type(trajectory)(padded, trajectory.padded_outputs.detach())
    return EpropResult(grads, value, y, trajectory, None, None)
