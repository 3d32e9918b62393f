"""Run a cell over a whole trial by iterating its ``step``; the recorded trajectory is what the fused e-prop
update, BPTT and the evaluation read."""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..numerics.fused_loop import spiking_loop
from .base import Params, stack_states
from .spiking import SpikingNeurons


class Trajectory(NamedTuple):
    """States of a trial with the initial state in front (``[B, T+1, ...]``), so that the states of each step
    and of the step before it are both views — no copies on the fused path."""

    padded: NamedTuple  # state record, fields [B, T+1, ...]; index 0 is the initial state
    padded_outputs: torch.Tensor  # cell outputs z [B, T+1, n_rec]; index 0 is z^{-1}

    @property
    def states(self) -> NamedTuple:
        """States after each step, fields ``[B, T, ...]``."""
        return type(self.padded)(*(f[:, 1:] for f in self.padded))

    def previous(self) -> NamedTuple:
        """States of the step before each step (the initial state first)."""
        return type(self.padded)(*(f[:, :-1] for f in self.padded))

    @property
    def initial(self) -> NamedTuple:
        return type(self.padded)(*(f[:, 0] for f in self.padded))

    @property
    def outputs(self) -> torch.Tensor:
        """z^t (spikes) ``[B, T, n_rec]``."""
        return self.padded_outputs[:, 1:]

    def previous_outputs(self) -> torch.Tensor:
        """z^{t-1}: the presynaptic signal of the recurrent weights at step t."""
        return self.padded_outputs[:, :-1]


def simulate(cell, params: Params, x: torch.Tensor, state0=None, paths: str = "full",
             fast: bool = False) -> Trajectory:
    """``x [B, T, n_in]`` → :class:`Trajectory`. The input currents of the whole trial are one matrix product;
    the time loop calls ``cell.step_current`` (the same function as ``cell.step``).

    ``fast=True`` (LIF/ALIF, :func:`has_fused_loop`; other cells always iterate their own step): the loop
    runs as one autograd node with a hand-written backward
    (:mod:`.fused_loop`) — same values, same first-order gradients, several times faster to differentiate; not
    for forward-mode transforms or double backward through the simulation. A trial that autograd does not
    record (no gradient needed) always runs that way.
    """
    return simulate_currents(cell, params, cell.input_current(params, x), state0, paths, fast)


def _recorded(*tensors: torch.Tensor) -> bool:
    """Whether autograd (or a torch.func transform) would record this trial; if not, the one-node loop — the
    native kernel on CPU — gives the same values at a fraction of the cost, whatever ``fast`` says."""
    if torch._C._are_functorch_transforms_active():
        return True
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def has_fused_loop(cell) -> bool:
    """Whether :func:`~eprop_l2l.numerics.fused_loop.spiking_loop` computes ``cell``'s equations (LIF, ALIF)."""
    return isinstance(cell, SpikingNeurons) and cell.has_fused_loop


def simulate_currents(cell, params: Params, currents: torch.Tensor, state0=None, paths: str = "full",
                      fast: bool = False) -> Trajectory:
    """:func:`simulate` from the input currents ``[B, T, rows]`` of the whole trial (``cell.input_current``)."""
    if state0 is None:
        state0 = cell.init_state(currents.shape[0], dtype=currents.dtype, device=currents.device)
    if has_fused_loop(cell) and (fast or not _recorded(currents, params["w_rec"], *state0)):
        padded = spiking_loop(cell, params, currents, state0, paths)
        return Trajectory(padded, cell.output(padded))
    state, states = state0, [state0]
    # unbind, not currents[:, t]: its backward stacks the steps' gradients once, where T selects would each
    # scatter into a zero tensor of the whole trial (O(T²) memory traffic, also in double backward)
    for current in currents.unbind(1):
        state, _ = cell.step_current(params, state, current, paths)
        states.append(state)
    padded = stack_states(states)
    return Trajectory(padded, cell.output(padded))
