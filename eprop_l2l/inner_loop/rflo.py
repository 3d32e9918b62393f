"""Random-feedback local online learning (RFLO; Murray 2019, eLife 8:e43299) for the leaky rate network
:class:`~eprop_l2l.cells.rate.RateRNN` — the rate-network member of the diagonal-RTRL family (docs/equations.md)::

    h^t = α h^{t-1} + s (W^rec r^{t-1} + W^in x^t),  r = φ(h),  α = 1 − dt/τ,  s = dt/τ
    p_ij^t = α p_ij^{t-1} + s φ'(h_i^{t-1}) pre_j^t        pre = r^{t-1} (W^rec) or x^t (W^in)
    ΔW_ij ∝ −Σ_t L_i^t p̄_ij^t,   L = B·err,   p̄ = F_κ(p)

Conventions:

* The postsynaptic factor is φ'(h_i^{t-1}) for *both* weight groups; only the presynaptic signal differs
  (x_j^t in place of φ(h_j^{t-1})). x^t and r^{t-1} enter h^t in the same sum, so their synapses see the same
  postsynaptic neuron at the same step — the index shift is the one of e-prop's LIF traces (x̄^t vs z̄^{t-1}).
  Unlike e-prop (e = φ'(h^t)·F_α(s·pre), :class:`RateRNN` ``trace_step``), RFLO filters the product with the
  derivative of the *previous* step: p no longer factorises, so the online trace is per synapse, O(B·N·n_pre).
* ``L`` comes from a learning-signal source (random feedback ``Feedback("random", ...)`` is RFLO proper;
  ``"symmetric"`` gives the feedback-alignment-free variant). The readout of this package is leaky
  (y^t = κ y^{t-1} + W^out r^t + b), so, as in e-prop, the readout filter moves onto the trace (p̄ = F_κ(p);
  ``kappa`` defaults to the readout's κ). Murray's instantaneous readout is κ → 0; ``kappa=0`` drops the filter.
* W^out and b^out follow the exact delta rule (``readout_grads``).

Both executions are e-prop's with RFLO's trace in place of the cell's: :func:`rflo_online` runs
:func:`~eprop_l2l.inner_loop.eprop_online.eprop_online` (per step, per synapse p and p̄), :func:`rflo_fused`
runs :func:`~eprop_l2l.inner_loop.eprop.eprop_fused`, where Σ_t L_i^t p̄_ij^t = Σ_t g_i^t pre_j^t with
g = s φ'(h^{t-1}) F_α^rev(F_κ^rev(L)) — two anticausal filters and one ``contract_time`` product.
"""

from __future__ import annotations

import dataclasses

import torch

from ..cells.base import Params
from ..cells.network import RecurrentNetwork
from ..cells.rate import RateRNN, RateState
from ..errors import ConfigError
from ..numerics.filters import anticausal_filter
from ..numerics.linalg import outer
from .eprop import EpropResult, eprop_fused
from .eprop_online import eprop_online


@dataclasses.dataclass(frozen=True)
class RFLORateRNN(RateRNN):
    """The same dynamics as :class:`RateRNN`, with RFLO's trace p (online) and its adjoint (fused)."""

    def trace_init(self, params: Params, state: RateState, n_pre: int) -> torch.Tensor:
        return torch.zeros(state.h.shape[0], self.n_rec, n_pre, dtype=state.h.dtype, device=state.h.device)

    def trace_step(self, params: Params, trace: torch.Tensor, prev_state: RateState, state: RateState, pre):
        p = self.alpha * trace + self.input_scale * outer(self.derivative(prev_state), pre)
        return p, p

    def adjoint(self, params: Params, trajectory, signal: torch.Tensor):
        return self.input_scale * self.derivative(trajectory.previous()) * anticausal_filter(signal, self.alpha)


def rflo_network(network: RecurrentNetwork) -> RecurrentNetwork:
    """``network`` with its :class:`RateRNN` replaced by the RFLO view of the same cell."""
    cell = network.cell
    if not isinstance(cell, RateRNN):
        raise ConfigError("rflo.cell", f"RFLO needs a RateRNN, got {type(cell).__name__}")
    fields = {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell)}
    return dataclasses.replace(network, cell=RFLORateRNN(**fields))


def rflo_fused(network: RecurrentNetwork, *args, **kwargs) -> EpropResult:
    """RFLO's update direction (same sign as a gradient), whole trial at once. Arguments and result are those
    of :func:`eprop_fused`; only the cell's trace differs."""
    return eprop_fused(rflo_network(network), *args, **kwargs)


def rflo_online(network: RecurrentNetwork, *args, **kwargs) -> EpropResult:
    """The same update as :func:`rflo_fused`, causally: per-synapse traces p, p̄ advanced step by step."""
    return eprop_online(rflo_network(network), *args, traces="closed_form", **kwargs)
