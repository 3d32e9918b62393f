"""A learning network: one recurrent cell and its leaky readout, with their parameters in one mapping."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .base import Params, check_params
from .readout import LeakyReadout
from .simulate import Trajectory, simulate


@dataclass(frozen=True)
class RecurrentNetwork:
    cell: object
    readout: LeakyReadout

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        return {**self.cell.init_params(generator, dtype), **self.readout.init_params(generator, dtype)}

    def run(self, params: Params, x: torch.Tensor, paths: str = "full",
            fast: bool = False) -> tuple[Trajectory, torch.Tensor]:
        """Whole trial: trajectory of the cell and readout ``y [B, T, n_out]``."""
        check_params(self.cell, params)
        if x.shape[-1] != self.cell.n_in:
            raise ConfigError("inputs", f"expected {self.cell.n_in} input channels, got {x.shape[-1]}")
        trajectory = simulate(self.cell, params, x, paths=paths, fast=fast)
        return trajectory, self.readout.run(params, trajectory.outputs)
