"""Adaptive LIF neurons (LSNN; Bellec et al. 2020, Methods eqs. 8-10):

    a_j^t = ρ a_j^{t-1} + z_j^{t-1},   A_j^t = v_th + β_j a_j^t,   z_j^t = H((v_j^t − A_j^t)/v_th)

with the LIF membrane of :mod:`.spiking` (reset subtracts the baseline v_th). ``n_adaptive`` of the ``n_rec``
neurons (the last ones) adapt with ``beta``; the rest have β = 0, so one cell holds LIF/ALIF mixtures.

Eligibility (h = (v, a); the adaptation keeps its dependence on the neuron's own spike):

    ε_v^t = F_α(s·pre)^t,  ε_a^t = ψ^{t-1} ε_v^{t-1} + (ρ − β ψ^{t-1}) ε_a^{t-1},  e^t = ψ^t (ε_v^t − β ε_a^t)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

import torch

from ..errors import ConfigError, require_count, require_positive
from ..numerics.eligibility_adjoint import eligibility_adjoint
from ..numerics.linalg import outer
from .base import Params
from .spiking import SpikingNeurons


class ALIFState(NamedTuple):
    v: torch.Tensor  # membrane potential v^t
    a: torch.Tensor  # threshold adaptation a^t
    z: torch.Tensor  # spikes z^t
    ref: torch.Tensor  # refractory counter in force at step t (> 0: spiking blocked)


class ALIFTrace(NamedTuple):
    pre_trace: torch.Tensor  # ε_v = F_α(s·pre)  [B, n_pre]
    eps_a: torch.Tensor  # adaptation component of the eligibility vector  [B, n_rec, n_pre]
    psi: torch.Tensor  # ψ of the previous step  [B, n_rec]


@dataclass(frozen=True)
class ALIF(SpikingNeurons):
    tau_a: float = 200.0
    beta: float = 0.07
    n_adaptive: int | None = None  # None: all neurons adapt

    def __post_init__(self):
        super().__post_init__()
        require_positive("alif.tau_a", self.tau_a)
        if isinstance(self.beta, bool) or not isinstance(self.beta, (int, float)) or not math.isfinite(self.beta):
            raise ConfigError("alif.beta", f"must be a finite number, got {self.beta!r}")
        if self.n_adaptive is not None:
            require_count("alif.n_adaptive", self.n_adaptive, minimum=0)
            if self.n_adaptive > self.n_rec:
                raise ConfigError("alif.n_adaptive", f"must be <= n_rec={self.n_rec}, got {self.n_adaptive}")

    def _spec_fields(self) -> dict:
        n_adaptive = self.n_rec if self.n_adaptive is None else self.n_adaptive
        return {**super()._spec_fields(), "model": "alif", "tau_a_ms": self.tau_a, "beta": self.beta,
                "n_adaptive": n_adaptive}

    @property
    def rho(self) -> float:
        return self.spec.rho

    @cached_property
    def _beta_cache(self) -> dict:
        return {}

    def beta_vector(self, like: torch.Tensor) -> torch.Tensor:
        """β per neuron (0 for the non-adaptive ones) in ``like``'s dtype and device, built once per cell."""
        if torch._C._are_functorch_transforms_active():  # made there, it has no storage a native loop could read
            return torch.tensor(self.spec.beta_per_neuron(), dtype=like.dtype, device=like.device)
        key = (like.dtype, like.device)
        if key not in self._beta_cache:
            self._beta_cache[key] = torch.tensor(self.spec.beta_per_neuron(), dtype=like.dtype, device=like.device)
        return self._beta_cache[key]

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> ALIFState:
        zeros = torch.zeros(batch, self.n_rec, dtype=dtype, device=device)
        return ALIFState(zeros, zeros, zeros, zeros)

    def state_record(self, v, a, z, ref) -> ALIFState:
        """The state record from separate tensors (the numerical loops keep them apart)."""
        return ALIFState(v, a, z, ref)

    def step_current(self, params: Params, state: ALIFState, i_in: torch.Tensor, paths: str = "full"):
        ref = self._refractory(state.ref, state.z)
        a = self.rho * state.a + state.z  # own spike: kept on every gradient path
        v = self._membrane(params, state.v, state.z, i_in, paths)
        z = self._fire(v, self.spec.v_th + self.beta_vector(v) * a, ref)
        return ALIFState(v, a, z, ref), z

    def psi(self, params: Params, state: ALIFState) -> torch.Tensor:
        return self._psi(state.v, state.ref, self.beta_vector(state.v) * state.a)

    # --- closed-form e-prop -------------------------------------------------------------------------------
    def trace_init(self, params: Params, state: ALIFState, n_pre: int) -> ALIFTrace:
        b = state.v.shape[0]
        pre = torch.zeros(b, n_pre, dtype=state.v.dtype, device=state.v.device)
        eps_a = torch.zeros(b, self.n_rec, n_pre, dtype=pre.dtype, device=pre.device)
        return ALIFTrace(pre, eps_a, torch.zeros_like(state.v))

    def trace_step(self, params: Params, trace: ALIFTrace, prev_state: ALIFState, state: ALIFState, pre):
        beta = self.beta_vector(state.v)
        eps_a = outer(trace.psi, trace.pre_trace) + ((self.rho - beta * trace.psi).unsqueeze(-1)) * trace.eps_a
        pre_trace = self.alpha * trace.pre_trace + self.input_scale * pre
        psi = self.psi(params, state)
        e = psi.unsqueeze(-1) * (pre_trace.unsqueeze(-2) - beta.unsqueeze(-1) * eps_a)
        return ALIFTrace(pre_trace, eps_a, psi), e

    def adjoint(self, params: Params, trajectory, signal: torch.Tensor):
        """Reverse-time adjoint of the 2×2 per-neuron recursion:

        λ_a^t = −β ψ^t S^t + (ρ − β ψ^t) λ_a^{t+1},   λ_v^t = ψ^t (S^t + λ_a^{t+1}) + α λ_v^{t+1},   g = s·λ_v
        """
        psi = self.psi(params, trajectory.states)
        g = eligibility_adjoint(psi, signal, self.alpha, self.rho, self.beta_vector(psi))
        return g if self.input_scale == 1.0 else self.input_scale * g
