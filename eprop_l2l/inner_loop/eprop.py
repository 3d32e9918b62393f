"""e-prop, fused execution: the whole trial's weight update as a few large tensor operations.

The estimate of dE/dW_ji is Σ_t L_j^t ē_ji^t + Σ_t R_j e_ji^t, with ē = F_κ(e) the readout-filtered trace and
R the rate-regulariser signal. Two exact rewrites make it cheap (docs/equations.md, "The fused adjoint"):

1. κ-filtering moves onto the learning signal: Σ_t L^t F_κ(e)^t = Σ_t F_κ^rev(L)^t e^t.
2. The eligibility vector obeys a per-neuron linear recursion driven by the presynaptic signal, so its
   adjoint g (``cell.adjoint``) is also per-neuron, and Σ_t S_j^t e_ji^t = Σ_t g_j^t pre_i^t.

ΔW is then one batched matrix product of two ``[B, T, ·]`` factors (``contract_time``): memory O(B·T·N), never
O(B·T·N²). Everything is plain autograd-tracked torch, so the outer loop differentiates through it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..cells.base import Params, mask_self_connections
from ..cells.simulate import Trajectory
from ..error_modules.base import Observation, for_readout
from ..numerics.filters import anticausal_filter
from ..numerics.linalg import contract_time, is_per_task
from .losses import Loss
from .regularization import RateRegularizer

RECURRENT_WEIGHTS = ("w_in", "w_rec", "bias")
READOUT_WEIGHTS = ("w_out", "b_out")
DEFAULT_PLASTIC = ("w_in", "w_rec", "w_out", "b_out")


class EpropResult(NamedTuple):
    grads: dict[str, torch.Tensor]  # e-prop estimates of dE/dW (same sign as a gradient)
    loss: torch.Tensor  # task loss + rate regulariser of this trial
    outputs: torch.Tensor  # readout y [B, T, n_out]
    trajectory: Trajectory | None  # the recorded trial (fused execution only)
    signals: torch.Tensor | None  # learning signals L [B, T, n_rec] (fused execution only)
    source_trajectory: Trajectory | None = None  # a recurrent source's own activity (fused execution only)


def presynaptic(name: str, trajectory: Trajectory, x: torch.Tensor) -> torch.Tensor:
    """The signal a weight group multiplies at step t: x^t (input), z^{t-1} (recurrent), 1 (bias)."""
    if name == "w_in":
        return x
    if name == "w_rec":
        return trajectory.previous_outputs()
    return torch.ones_like(x[..., :1])


def recurrent_grads(
    cell,
    params: Params,
    trajectory: Trajectory,
    x: torch.Tensor,
    signals: torch.Tensor,
    kappa: float,
    reg_signal: torch.Tensor | None = None,
    names: tuple[str, ...] = ("w_in", "w_rec"),
    per_task: bool | None = None,
) -> dict[str, torch.Tensor]:
    """Fused e-prop estimates for the cell's weight groups ``names`` given the learning signals ``[B, T, n_rec]``;
    one estimate per batch element where the weights are per-task or ``per_task`` asks for it."""
    total = anticausal_filter(signals, kappa) if kappa > 0 else signals
    if reg_signal is not None:
        total = total + reg_signal
    g = cell.adjoint(params, trajectory, total)
    grads = {}
    for name in names:
        pre = presynaptic(name, trajectory, x)
        separate = is_per_task(params[name], bias=name == "bias") if per_task is None else per_task
        grad = contract_time(g, pre, separate)
        grads[name] = mask_self_connections(cell, name, grad.squeeze(-1) if name == "bias" else grad)
    return grads


def readout_grads(readout, params: Params, z: torch.Tensor, error: torch.Tensor, names=READOUT_WEIGHTS,
                  per_task: bool | None = None):
    """Exact delta rule: dE/dW^out_kj = Σ_t err_k^t F_κ(s·z_j)^t, dE/db_k = Σ_t F_κ^rev(err)^t."""
    filtered = anticausal_filter(error, readout.kappa)
    grads = {}
    if "w_out" in names:
        separate = is_per_task(params["w_out"]) if per_task is None else per_task
        grads["w_out"] = readout.input_scale * contract_time(filtered, z, separate)
    if "b_out" in names and readout.bias:
        separate = is_per_task(params["b_out"], bias=True) if per_task is None else per_task
        grads["b_out"] = filtered.sum(1) if separate else filtered.sum((0, 1))
    return grads


@dataclass(frozen=True, kw_only=True)
class EpropOptions:
    """What both executions of e-prop (:func:`eprop_fused`, :func:`eprop_online`) read besides the trial and the
    signal source, with their defaults stated once: either takes these as keywords."""

    source_params: Params | None = None  # the source's own parameters (b_fb, a learned module's em_*)
    regularizer: RateRegularizer | None = None
    plastic: tuple[str, ...] = DEFAULT_PLASTIC
    kappa: float | None = None  # trace filter: None is the readout's κ, 0 none (e-prop 2)
    context: torch.Tensor | None = None  # the task's context [B, T, ·], in the source's observation

    def trace_filter(self, readout) -> float:
        """κ of the traces' filter for a network with ``readout``."""
        return readout.kappa if self.kappa is None else self.kappa

    def source_view(self, params: Params) -> Params:
        """The mapping the source reads: the network's parameters and its own."""
        return {**params, **(self.source_params or {})}

    def recurrent_plastic(self) -> tuple[str, ...]:
        """The plastic weights of the cell (the rest are the readout's)."""
        return tuple(n for n in self.plastic if n in RECURRENT_WEIGHTS)


def eprop_fused(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                source, *, fast: bool = False, per_task: bool | None = None, source_drive: torch.Tensor | None = None,
                **keywords) -> EpropResult:
    """Run one trial and return e-prop's weight-update direction for ``plastic``.

    ``keywords`` are the fields of :class:`EpropOptions`. ``source`` is a learning-signal source
    (:mod:`eprop_l2l.error_modules`), used as ``source.for_readout(network.readout)`` (symmetric and adaptive
    feedback take the readout's input scale); it sees ``{**params, **source_params}`` and, in its observation,
    the task's ``context`` ``[B, T, ·]`` if given (e.g. the coded target movement for a learned error module).
    ``kappa`` filters the traces (default: the readout's κ, which makes symmetric feedback exact in the sense of
    Bellec et al. 2020; 0 disables filtering, as in e-prop 2). ``fast`` runs spiking time loops with the
    hand-written backward (:mod:`eprop_l2l.numerics.fused_loop`).
    ``per_task=True`` returns one update per batch element (task) even where the weights are shared — the
    first update of a learning-to-learn batch runs the demonstration on the shared initial weights (the cheap
    matrix-matrix layout) and still gives every task its own ΔW. Default: per task iff ``w_rec`` is.
    """
    options = EpropOptions(**keywords)
    regularizer = options.regularizer
    source = for_readout(source, network.readout)
    trajectory, y = network.run(params, x, fast=fast)
    z = trajectory.outputs
    separate = is_per_task(params["w_rec"]) if per_task is None else per_task  # the regulariser's rates
    error = loss.error(y, target, mask)
    signals, source_trajectory = source.run(options.source_view(params),
                                            Observation(error=error, output=y, target=target, spikes=z, inputs=x,
                                                        context=options.context, drive=source_drive))
    reg_signal = regularizer.signal(z, separate) if regularizer is not None else None
    value = loss.value(y, target, mask) + (regularizer.loss(z, separate) if regularizer is not None else 0.0)
    grads = recurrent_grads(network.cell, params, trajectory, x, signals, options.trace_filter(network.readout),
                            reg_signal, options.recurrent_plastic(), per_task)
    grads.update(readout_grads(network.readout, params, z, error,
                               tuple(n for n in options.plastic if n in READOUT_WEIGHTS), per_task))
    return EpropResult(grads, value, y, trajectory, signals, source_trajectory)
