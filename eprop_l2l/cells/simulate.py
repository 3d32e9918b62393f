"""Run a cell over a whole trial by iterating its ``step``; the recorded trajectory is what the fused e-prop
update, BPTT and the evaluation read."""

from __future__ import annotations

from typing import NamedTuple

import torch

from .base import Params, shift_states, stack_states


class Trajectory(NamedTuple):
    initial: NamedTuple  # state before the first step, fields [B, ...]
    states: NamedTuple  # states after each step, fields [B, T, ...]
    outputs: torch.Tensor  # cell outputs z^t (spikes) [B, T, n_rec]
    initial_output: torch.Tensor  # z^{-1} [B, n_rec]

    def previous(self) -> NamedTuple:
        """States of the step before each step (``initial`` first)."""
        return shift_states(self.initial, self.states)

    def previous_outputs(self) -> torch.Tensor:
        """z^{t-1}: the presynaptic signal of the recurrent weights at step t."""
        return torch.cat([self.initial_output.unsqueeze(1), self.outputs[:, :-1]], 1)


def simulate(cell, params: Params, x: torch.Tensor, state0=None, paths: str = "full") -> Trajectory:
    """``x [B, T, n_in]`` → :class:`Trajectory`. The input currents of the whole trial are one matrix product;
    the time loop calls ``cell.step_current`` (the same function as ``cell.step``)."""
    if state0 is None:
        state0 = cell.init_state(x.shape[0], dtype=x.dtype, device=x.device)
    currents = cell.input_current(params, x)
    state, states = state0, []
    for t in range(x.shape[1]):
        state, _ = cell.step_current(params, state, currents[:, t], paths)
        states.append(state)
    stacked = stack_states(states)
    return Trajectory(state0, stacked, cell.output(stacked), cell.output(state0))
