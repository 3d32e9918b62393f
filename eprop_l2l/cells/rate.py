"""Leaky rate network, the model of RFLO (Murray 2019)::

    h^t = α h^{t-1} + (dt/τ)(W^rec r^{t-1} + W^in x^t),   r^t = φ(h^t) = tanh(h^t),   α = 1 − dt/τ

Its e-prop trace factorises like LIF's (one state per neuron, constant leak α): ε_ji = F_α((dt/τ)·pre_i) and
e_ji^t = φ'(h_j^t) ε_ji^t with φ' = 1 − r². The RFLO rule (:mod:`eprop_l2l.inner_loop.rflo`) uses the same
dynamics with its own trace.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import NamedTuple

import torch

from ..errors import ConfigError, require_choice, require_count, require_positive
from .base import FactorisedTraceCell, Params, gaussian, recurrent_drive

NONLINEARITIES = ("tanh",)


class RateState(NamedTuple):
    h: torch.Tensor  # pre-activation (membrane) h^t
    r: torch.Tensor  # rate r^t = φ(h^t)


@dataclass(frozen=True)
class RateRNN(FactorisedTraceCell):
    n_in: int
    n_rec: int
    tau: float = 10.0
    nonlinearity: str = "tanh"
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms)

    self_connections = True

    def __post_init__(self):
        require_count("rate.n_in", self.n_in)
        require_count("rate.n_rec", self.n_rec)
        require_positive("rate.tau", self.tau)
        require_positive("rate.dt_ms", self.dt_ms)
        if self.tau <= self.dt_ms:
            raise ConfigError("rate.tau", f"must be > dt_ms={self.dt_ms!r} (leak 1 − dt/τ in (0, 1)), got {self.tau!r}")
        require_choice("rate.nonlinearity", self.nonlinearity, NONLINEARITIES)

    @property
    def alpha(self) -> float:
        return 1.0 - self.dt_ms / self.tau

    @property
    def input_scale(self) -> float:
        return self.dt_ms / self.tau

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        """W^in ~ N(0,1)/√n_in, W^rec ~ N(0,1)/√n_rec (self-connections included)."""
        w_in = gaussian((self.n_rec, self.n_in), 1.0 / math.sqrt(self.n_in), generator, dtype)
        w_rec = gaussian((self.n_rec, self.n_rec), 1.0 / math.sqrt(self.n_rec), generator, dtype)
        return {"w_in": w_in, "w_rec": w_rec}

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> RateState:
        zeros = torch.zeros(batch, self.n_rec, dtype=dtype, device=device)
        return RateState(zeros, torch.tanh(zeros))

    def step_current(self, params: Params, state: RateState, i_in: torch.Tensor, paths: str = "full"):
        h = self.alpha * state.h + i_in + self.input_scale * recurrent_drive(params["w_rec"], state.r, paths)
        r = torch.tanh(h)
        return RateState(h, r), r

    def output(self, state: RateState) -> torch.Tensor:
        return state.r

    def derivative(self, state: RateState) -> torch.Tensor:
        """φ'(h) = 1 − φ(h)² from the stored rate."""
        return 1.0 - state.r**2

    def psi(self, params: Params, state: RateState) -> torch.Tensor:
        return self.derivative(state)
