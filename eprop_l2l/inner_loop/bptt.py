"""Backpropagation through time of the same cells — the exact-gradient baseline, and (``paths="local"``) the
autodiff form of e-prop: with previous spikes detached where they reach other neurons and the own reset
(Bellec et al. 2020, Suppl. S1.1), BPTT returns exactly e-prop's update with the true partial learning signal
∂E/∂z^t = s·W^outᵀ·(readout-filtered error) (s: the readout's input scale), i.e. symmetric feedback with
κ-filtered traces."""

from __future__ import annotations

import torch

from ..cells.base import Params, cuts_coupling, mask_self_connections
from ..cells.simulate import simulate_currents
from ..cells.spiking import SpikingNeurons
from ..numerics.linalg import contract_time, is_per_task
from .eprop import DEFAULT_PLASTIC, EpropResult, presynaptic, readout_grads
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
    result = bptt_result(network, params, x, target, mask, loss, plastic=plastic, regularizer=regularizer,
                         paths=paths, create_graph=create_graph, fast=fast)
    return result.grads, result.loss


def bptt_result(network, params: Params, x, target, mask, loss: Loss, *, plastic: tuple[str, ...] = DEFAULT_PLASTIC,
                regularizer: RateRegularizer | None = None, paths: str = "full", create_graph: bool = False,
                fast: bool = False, per_task: bool = False) -> EpropResult:
    """:func:`bptt_grads` with the trial's records, in the form of the e-prop rules' result (no learning
    signals). Computes the gradient even where autograd is globally off (evaluation of a MAML-style step).

    ``per_task=True`` returns one gradient per batch element (task) from shared weights: the trial runs on the
    shared matrices, autograd gives ∂E/∂(input current) and ∂E/∂y per step, and each task's weight gradient is
    one product over time — exactly what per-task copies of the weights would give, without per-task matrices
    in the time loop (a MAML-style inner step: :class:`~eprop_l2l.meta.learner.MetaLearner`)."""
    if fast and create_graph:
        raise ValueError("bptt_grads: fast=True gives first-order gradients only; use create_graph without it")
    names = [n for n in plastic if n in params]
    if per_task and _per_step_currents(network, params, names):
        return _per_task_result(network, params, x, target, mask, loss, names, regularizer, paths, create_graph,
                                fast)
    if per_task:  # weights the current-probe form does not cover: per-task copies of them
        params = {k: (v.expand(x.shape[0], *v.shape) if k in names and not is_per_task(v) else v)
                  for k, v in params.items()}
    # Under no_grad a weight may still say requires_grad (a view of a meta-parameter taken there) without being
    # connected to a graph: such a weight becomes a fresh leaf, as does one that needs no gradient.
    recorded = torch.is_grad_enabled()
    with torch.enable_grad():
        leaves = {n: params[n] if recorded and params[n].requires_grad else params[n].detach().requires_grad_()
                  for n in names}
        value, trajectory, y = _trial(network, {**params, **leaves}, x, target, mask, loss, regularizer, paths, fast)
        grads = torch.autograd.grad(value, list(leaves.values()), create_graph=create_graph)
    grads = {n: mask_self_connections(network.cell, n, g) for n, g in zip(names, grads, strict=True)}
    return _result(grads, value, y, trajectory, create_graph)


def _per_step_currents(network, params: Params, names: list[str]) -> bool:
    """Whether every plastic weight is shared and enters a spiking cell as s·W·pre added to the input current
    (w_in, w_rec) or the readout's drive (w_out), so that ∂E/∂W per task is a product over time."""
    return (isinstance(network.cell, SpikingNeurons) and set(names) <= {"w_in", "w_rec", "w_out"}
            and not any(is_per_task(params[n]) for n in names))


def _per_task_result(network, params: Params, x, target, mask, loss: Loss, names: list[str],
                     regularizer: RateRegularizer | None, paths: str, create_graph: bool, fast: bool) -> EpropResult:
    cell = network.cell
    with torch.enable_grad():
        currents = cell.input_current(params, x)
        probe = torch.zeros_like(currents, requires_grad=True)  # ∂E/∂probe = ∂E/∂(input current) per step
        trajectory = simulate_currents(cell, params, currents + probe, paths=paths, fast=fast)
        y = network.readout.run(params, trajectory.outputs)
        value = loss.value(y, target, mask)
        if regularizer is not None:
            value = value + regularizer.loss(trajectory.outputs, True)  # per-task rates, as with per-task weights
        delta, error = torch.autograd.grad(value, [probe, y], create_graph=create_graph)
    # the weights enter as s·W·pre: dE/dW_ji = s·Σ_t δ_j^t pre_i^t
    delta = delta if cell.input_scale == 1.0 else cell.input_scale * delta
    grads = {n: mask_self_connections(cell, n, contract_time(delta, _presynaptic(n, trajectory, x, paths), True))
             for n in names if n != "w_out"}
    if "w_out" in names:
        grads["w_out"] = readout_grads(network.readout, params, trajectory.outputs, error, ("w_out",), True)["w_out"]
    return _result({n: grads[n] for n in names}, value, y, trajectory, create_graph)


def _presynaptic(name: str, trajectory, x, paths: str) -> torch.Tensor:
    # where the coupling is cut the recurrent weights multiply detached spikes (the cells' step): so does dE/dW
    pre = presynaptic(name, trajectory, x)
    return pre.detach() if cuts_coupling(paths) and name == "w_rec" else pre


def _result(grads, value, y, trajectory, create_graph: bool) -> EpropResult:
    if not create_graph:
        # nothing downstream differentiates through this trial: free its graph
        padded = type(trajectory.padded)(*(t.detach() for t in trajectory.padded))
        value, y, trajectory = value.detach(), y.detach(), type(trajectory)(padded, trajectory.padded_outputs.detach())
    return EpropResult(grads, value, y, trajectory, None, None)
