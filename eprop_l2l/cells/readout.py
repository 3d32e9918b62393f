"""Leaky linear readout (Bellec et al. 2020, eq. 11): y_k^t = κ y_k^{t-1} + s·Σ_j W^out_kj z_j^t + b_k.

``s`` is 1 (new convention) or 1 − κ (``input_scaling="old"``, the F_κ of several tutorial scripts). With
κ = α this is also the e-prop 2 motor readout ``u = W^out F_α(z)``.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, replace
from functools import cached_property

import torch

from ..errors import require_choice, require_count, require_non_negative, require_positive
from ..numerics.filters import causal_filter
from ..numerics.linalg import linear
from .base import Params, gaussian
from .spec import ReadoutSpec


@dataclass(frozen=True)
class LeakyReadout:
    n_in: int
    n_out: int
    tau_out: float = 20.0
    input_scaling: str = "new"
    bias: bool = True
    init_scale: float = 1.0  # W^out ~ init_scale · N(0,1)/√n_in
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms)

    def __post_init__(self):
        require_count("readout.n_in", self.n_in)
        require_count("readout.n_out", self.n_out)
        require_positive("readout.tau_out", self.tau_out)
        require_positive("readout.dt_ms", self.dt_ms)
        require_non_negative("readout.init_scale", self.init_scale)
        require_choice("readout.input_scaling", self.input_scaling, ("new", "old"))

    @cached_property
    def spec(self) -> ReadoutSpec:
        """The readout's constants, stated once (its step and the export read them here)."""
        spec = ReadoutSpec(self.n_in, self.n_out, self.dt_ms, self.tau_out, 1.0, self.bias)
        return replace(spec, input_scale=1.0 - spec.kappa) if self.input_scaling == "old" else spec

    @property
    def kappa(self) -> float:
        return self.spec.kappa

    @property
    def input_scale(self) -> float:
        return self.spec.input_scale

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        params = {"w_out": gaussian((self.n_out, self.n_in), self.init_scale / math.sqrt(self.n_in), generator, dtype)}
        if self.bias:
            params["b_out"] = torch.zeros(self.n_out, dtype=dtype)
        return params

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> torch.Tensor:
        return torch.zeros(batch, self.n_out, dtype=dtype, device=device)

    def drive(self, params: Params, z: torch.Tensor) -> torch.Tensor:
        """The input of the leaky integrator, ``s·W^out z + b``, for one step or a whole trial."""
        u = self.input_scale * linear(params["w_out"], z)
        if self.bias:
            b = params["b_out"]
            u = u + (b.unsqueeze(-2) if b.dim() == 2 and z.dim() == 3 else b)
        return u

    def step(self, params: Params, y_prev: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.kappa * y_prev + self.drive(params, z)

    def run(self, params: Params, z: torch.Tensor, y0: torch.Tensor | None = None) -> torch.Tensor:
        """Whole trial ``z [B, T, n_in] → y [B, T, n_out]``; equal to iterating :meth:`step`."""
        return causal_filter(self.drive(params, z), self.kappa, initial=y0)
