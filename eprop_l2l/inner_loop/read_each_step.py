"""A learning network whose crossbar weights are read anew at every time step (``device.read_every=step``, the
read noise of the authors' PCM model, which adds a fresh draw inside each step's matrix product).

Each step t runs on ``W + N^t`` for every chip weight (:data:`.device.CHIP_WEIGHTS`), ``N^t = read(W) − W`` a
fresh draw of :meth:`.device.PCMDevice.read` from the generator passed in. The noise enters as the currents
``s·N^t·pre`` it adds (the input x^t for W_in, the spikes z^{t−1} for W_rec, z^t for W_out), detached: the gradient
is that of the noise-free weights, with respect to the weights and to the spikes alike, as in the authors'
custom gradient of the noisy product. The draws at one step come in the order of ``CHIP_WEIGHTS``.

The time loop is the cells' own step (``cell.step_current``): a weight matrix per step does not fit the fused
loops, so this runs at the speed of the step-by-step path. The trajectory it records is the one the e-prop
update reads (``eprop_fused`` runs ``network.run``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cells.base import Params, check_params, stack_states
from ..cells.simulate import Trajectory
from ..errors import ConfigError
from ..numerics.linalg import linear
from .device import CHIP_WEIGHTS, PCMDevice


@dataclass(frozen=True)
class ReadEachStep:
    network: object  # a RecurrentNetwork: its cell and readout
    device: PCMDevice
    generator: torch.Generator

    @property
    def cell(self):
        return self.network.cell

    @property
    def readout(self):
        return self.network.readout

    def deviations(self, params: Params) -> dict[str, torch.Tensor]:
        """One step's read noise ``N^t`` of each chip weight in ``params`` (detached)."""
        return {k: (self.device.read(params[k].detach(), self.generator) - params[k].detach())
                for k in CHIP_WEIGHTS if k in params}

    def run(self, params: Params, x: torch.Tensor, paths: str = "full",
            fast: bool = False) -> tuple[Trajectory, torch.Tensor]:
        """Whole trial: trajectory of the cell and readout ``y [B, T, n_out]`` (``fast`` is ignored: the loop is
        the cell's step)."""
        cell, readout = self.cell, self.readout
        check_params(cell, params)
        if x.shape[-1] != cell.n_in:
            raise ConfigError("inputs", f"expected {cell.n_in} input channels, got {x.shape[-1]}")
        currents = cell.input_current(params, x)
        state = cell.init_state(x.shape[0], dtype=currents.dtype, device=currents.device)
        y = readout.init_state(x.shape[0], dtype=currents.dtype, device=currents.device)
        states, ys = [state], []
        for x_t, current in zip(x.unbind(1), currents.unbind(1), strict=True):
            noise = self.deviations(params)
            extra = torch.zeros_like(current)
            if "w_in" in noise:
                extra = extra + linear(noise["w_in"], x_t)
            if "w_rec" in noise:
                extra = extra + linear(noise["w_rec"], cell.output(state).detach())
            state, z = cell.step_current(params, state, current + (cell.input_scale * extra).detach(), paths)
            y = readout.step(params, y, z)
            if "w_out" in noise:
                y = y + (readout.input_scale * linear(noise["w_out"], z.detach())).detach()
            states.append(state)
            ys.append(y)
        padded = stack_states(states)
        return Trajectory(padded, cell.output(padded)), torch.stack(ys, 1)
