"""Current-based LIF neurons: two states per neuron, a synaptic current and a membrane (NIR's ``CubaLIF``, the
standard neuron of Loihi 2; constants in :class:`~eprop_l2l.cells.spec.CurrentSpec`):

    i_j^t = α_s i_j^{t-1} + s·(Σ_{i≠j} W^rec_ji z_i^{t-1} + Σ_i W^in_ji x_i^t)      α_s = exp(−dt/τ_syn)
    v_j^t = α v_j^{t-1} + i_j^t − v_th z_j^{t-1}
    z_j^t = H((v_j^t − v_th)/v_th), blocked while the refractory counter is > 0

(spike, reset and refractory counter of :mod:`.spiking`). The membrane reads the current of its own step, as
snnTorch's ``Synaptic`` and Loihi's CUBA neuron do.

Neuron-internal Jacobian (the block D of h = (i, v) under the e-prop convention, ``paths="local"``: other
neurons' spikes and the own reset are constants) is the constant 2×2 matrix

    D = [[α_s, 0], [α_s, α]]      (∂i^t/∂i^{t-1}, ∂i^t/∂v^{t-1}; ∂v^t/∂i^{t-1}, ∂v^t/∂v^{t-1})

so the eligibility vector ε ← D ε + (s·pre, s·pre) does not depend on the postsynaptic neuron: two presynaptic
traces, nested exponential filters, carry it —

    ε_i = F_{α_s}(s·pre),   ε_v = F_α(ε_i),   e_ji^t = ψ_j^t ε_v,i^t

— and the fused adjoint is the transposed pair of filters, g = s·F_{α_s}^rev(F_α^rev(ψ S)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import require_positive
from ..numerics.eligibility_adjoint import eligibility_adjoint
from ..numerics.filters import anticausal_filter
from ..numerics.linalg import linear, outer
from .base import Params
from .spec import CurrentSpec
from .spiking import SpikingNeurons


class CubaLIFState(NamedTuple):
    i_syn: torch.Tensor  # synaptic current i^t
    v: torch.Tensor  # membrane potential v^t
    z: torch.Tensor  # spikes z^t
    ref: torch.Tensor  # refractory counter in force at step t (> 0: spiking blocked; float, no gradient)


class CubaLIFTrace(NamedTuple):
    current: torch.Tensor  # ε_i = F_{α_s}(s·pre)  [B, n_pre]
    membrane: torch.Tensor  # ε_v = F_α(ε_i)  [B, n_pre]


@dataclass(frozen=True)
class CubaLIF(SpikingNeurons):
    tau_syn: float = 5.0  # ms, synaptic current

    has_fused_loop = False  # the fused loop's equations are LIF/ALIF's: this cell iterates its own step
    spec_type = CurrentSpec
    config_name = "cuba_lif"

    def __post_init__(self):
        super().__post_init__()
        require_positive("cuba_lif.tau_syn", self.tau_syn)

    def _spec_fields(self) -> dict:
        return {**super()._spec_fields(), "model": "cuba_lif", "tau_syn_ms": self.tau_syn}

    @property
    def alpha_syn(self) -> float:
        return self.spec.alpha_syn

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> CubaLIFState:
        zeros = torch.zeros(batch, self.n_rec, dtype=dtype, device=device)
        return CubaLIFState(zeros, zeros, zeros, zeros)

    def step_current(self, params: Params, state: CubaLIFState, i_in: torch.Tensor, paths: str = "full"):
        spec = self.spec
        ref = self._refractory(state.ref, state.z)
        z_other, z_reset = self._previous_spikes(state.z, paths)
        i_syn = linear(params["w_rec"], z_other, add=spec.alpha_syn * state.i_syn + i_in, scale=spec.input_scale)
        v = torch.add(spec.alpha * state.v + i_syn, z_reset, alpha=-spec.v_th)
        z = self._fire(v, spec.v_th, ref)
        return CubaLIFState(i_syn, v, z, ref), z

    def psi(self, params: Params, state: CubaLIFState) -> torch.Tensor:
        return self._psi(state.v, state.ref)

    # --- closed-form e-prop -------------------------------------------------------------------------------
    def trace_init(self, params: Params, state: CubaLIFState, n_pre: int) -> CubaLIFTrace:
        zeros = torch.zeros(state.v.shape[0], n_pre, dtype=state.v.dtype, device=state.v.device)
        return CubaLIFTrace(zeros, zeros)

    def trace_step(self, params: Params, trace: CubaLIFTrace, prev_state, state: CubaLIFState, pre):
        current = self.alpha_syn * trace.current + self.input_scale * pre
        membrane = self.alpha * trace.membrane + current
        return CubaLIFTrace(current, membrane), outer(self.psi(params, state), membrane)

    def adjoint(self, params: Params, trajectory, signal: torch.Tensor) -> torch.Tensor:
        """λ_v^t = ψ^t S^t + α λ_v^{t+1} (the membrane's adjoint), λ_i^t = λ_v^t + α_s λ_i^{t+1}, g = s·λ_i."""
        lam_v = eligibility_adjoint(self.psi(params, trajectory.states), signal, self.alpha)
        g = anticausal_filter(lam_v, self.alpha_syn)
        return g if self.input_scale == 1.0 else self.input_scale * g
