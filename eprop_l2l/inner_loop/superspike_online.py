"""SuperSpike, online: causal, one step at a time, memory independent of the trial length — the form a learning
engine would run, and the reference for the fused :func:`~.superspike.superspike_grads` (equal to 1e-10).

Per step the network advances (:meth:`~eprop_l2l.cells.feedforward.FeedforwardNetwork.step`), each layer's cell
updates its presynaptic trace and eligibility ``e_l^t = ψ_l^t·F_α(s·pre_l)^t`` (its own ``trace_step``), the
synapse keeps the readout-filtered ``ē_l = F_κ(e_l)``, and ``ΔW_l`` accumulates ``L^l,t ⊗ ē_l^t`` with the
learning signal of this step's output error; the readout accumulates its delta rule. Without the rate
regulariser and the rise filter (fused form only: the first needs the trial's mean rate).
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..cells.base import Params
from ..cells.feedforward import FeedforwardState
from .eprop import EpropResult
from .losses import Loss


class SuperSpikeState(NamedTuple):
    network: FeedforwardState
    traces: tuple  # per layer: the cell's trace state (presynaptic trace [B, n_pre])
    filtered: tuple  # per layer: ē = F_κ(e) [B, n_l, n_pre]
    acc: tuple  # per layer: Σ_t L^t ē^t [n_l, n_pre]
    readout_pre: torch.Tensor  # F_κ(s·z_L) [B, n_L]
    readout_one: torch.Tensor  # F_κ(1), the bias's trace (a number per step)
    acc_w_out: torch.Tensor  # Σ_t err^tᵀ F_κ(s·z_L)^t [n_out, n_L]
    acc_b_out: torch.Tensor  # Σ_t err^t F_κ(1)^t [n_out]
    value: torch.Tensor  # the task loss so far


def superspike_init(network, params: Params, batch: int, dtype=torch.float64, device=None) -> SuperSpikeState:
    state = network.init_state(batch, dtype, device)
    traces = tuple(cell.trace_init(network.layer_params(params, index), state.layers[index], cell.n_in)
                   for index, cell in enumerate(network.layers))
    zeros = lambda *shape: torch.zeros(*shape, dtype=dtype, device=device)  # noqa: E731
    filtered = tuple(zeros(batch, cell.n_rec, cell.n_in) for cell in network.layers)
    acc = tuple(zeros(cell.n_rec, cell.n_in) for cell in network.layers)
    n_out, n_last = network.readout.n_out, network.layers[-1].n_rec
    return SuperSpikeState(state, traces, filtered, acc, zeros(batch, n_last), zeros(()), zeros(n_out, n_last),
                           zeros(n_out), zeros(()))


def superspike_step(network, feedback, params: Params, state: SuperSpikeState, x: torch.Tensor,
                    target: torch.Tensor, mask: torch.Tensor, loss: Loss) -> SuperSpikeState:
    """One step ``x [B, n_in]``, ``target [B, n_out]``, ``mask [B]``; ``params`` holds the feedback's matrices."""
    readout, kappa = network.readout, network.readout.kappa
    net_state, y = network.step(params, state.network, x)
    error = loss.error(y, target, mask)
    signals = feedback.signals(network, params, error)
    traces, filtered, acc = [], [], []
    pre = x
    for index, cell in enumerate(network.layers):
        trace, e = cell.trace_step(network.layer_params(params, index), state.traces[index],
                                   state.network.layers[index], net_state.layers[index], pre)
        smooth = kappa * state.filtered[index] + e
        traces.append(trace)
        filtered.append(smooth)
        acc.append(state.acc[index] + torch.einsum("bj,bji->ji", signals[index], smooth))
        pre = cell.output(net_state.layers[index])
    readout_pre = kappa * state.readout_pre + readout.input_scale * pre
    readout_one = kappa * state.readout_one + 1.0
    return SuperSpikeState(net_state, tuple(traces), tuple(filtered), tuple(acc), readout_pre, readout_one,
                           state.acc_w_out + error.mT @ readout_pre, state.acc_b_out + readout_one * error.sum(0),
                           state.value + loss.value(y, target, mask))


def superspike_online(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                      feedback, feedback_params: Params | None = None) -> EpropResult:
    """The trial step by step: every layer's update, the readout's, and the loss (no trajectory or outputs)."""
    network.check(params, x)
    view = {**params, **(feedback_params or {})}
    state = superspike_init(network, params, x.shape[0], x.dtype, x.device)
    for t in range(x.shape[1]):
        state = superspike_step(network, feedback, view, state, x[:, t], target[:, t], mask[:, t], loss)
    grads = dict(zip(network.weight_names, state.acc, strict=True))
    grads["w_out"] = state.acc_w_out
    if network.readout.bias:
        grads["b_out"] = state.acc_b_out
    return EpropResult(grads, state.value, None, None, None)
