"""Leaky integrate-and-fire neurons (Bellec et al. 2020, Methods eqs. 6-7); the dynamics are in
:mod:`.spiking`, the e-prop trace is the factorised one: e_ji^t = ψ_j^t · F_α(s·pre)_i^t."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .base import FactorisedTraceCell, Params
from .spiking import SpikingNeurons


class LIFState(NamedTuple):
    v: torch.Tensor  # membrane potential v^t
    z: torch.Tensor  # spikes z^t
    ref: torch.Tensor  # refractory counter in force at step t (> 0: spiking blocked; float, no gradient)


@dataclass(frozen=True)
class LIF(FactorisedTraceCell, SpikingNeurons):
    def init_state(self, batch: int, dtype=torch.float32, device=None) -> LIFState:
        zeros = torch.zeros(batch, self.n_rec, dtype=dtype, device=device)
        return LIFState(zeros, zeros, zeros)

    def state_record(self, v, a, z, ref) -> LIFState:
        """The state record from separate tensors (the numerical loops keep them apart; LIF has no ``a``)."""
        return LIFState(v, z, ref)

    def step_current(self, params: Params, state: LIFState, i_in: torch.Tensor, paths: str = "full"):
        ref = self._refractory(state.ref, state.z)
        v = self._membrane(params, state.v, state.z, i_in, paths)
        z = self._fire(v, self.spec.v_th, ref)
        return LIFState(v, z, ref), z

    def psi(self, params: Params, state: LIFState) -> torch.Tensor:
        return self._psi(state.v, state.ref)
