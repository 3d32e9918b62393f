"""What a learning-signal source may see, and the interface every source implements.

A source maps, step by step, what is available at step t to a learning signal L^t ∈ R^{B × n_rec}:

* ``init_state(batch, dtype, device)`` → its own recurrent state (``None`` for memoryless feedback);
* ``step(params, state, obs) -> (state, L_t)`` — the causal, online form used by online e-prop and hardware;
* ``sequence(params, obs) -> L [B, T, n_rec]`` — the same signals for a whole trial (fused execution). The
  default implementation iterates ``step``; memoryless sources override it with one tensor operation;
* ``run(params, obs) -> (L, trajectory | None)`` — ``sequence`` plus the source's own recorded activity, if it
  has any (a learned error module's spikes enter the outer loop's rate regulariser).
* ``for_readout(readout)`` → the source as the e-prop rules use it with that readout (default: itself; symmetric
  and adaptive feedback take the readout's input scale).
"""

from __future__ import annotations

from typing import NamedTuple

import torch


def for_readout(source, readout):
    """``source.for_readout(readout)``, or ``source`` itself if it does not define it."""
    bind = getattr(source, "for_readout", None)
    return source if bind is None else bind(readout)


class Observation(NamedTuple):
    """Per step ``[B, ·]`` or per trial ``[B, T, ·]``; a source reads only the fields it needs. Built with
    keywords: a field a caller does not have stays None."""

    error: torch.Tensor | None = None  # ∂E/∂y^t, the network's output error
    output: torch.Tensor | None = None  # y^t
    target: torch.Tensor | None = None  # y*^t
    spikes: torch.Tensor | None = None  # z^t of the learning network
    inputs: torch.Tensor | None = None  # x^t of the learning network
    context: torch.Tensor | None = None  # task-provided input of a learned error module (e.g. coded target)
    # a learned module's input current from what is the same in every trial of a task (its context and the
    # network's inputs), computed once per batch by the caller (LearnedErrorModule.fixed_drive); None: computed
    drive: torch.Tensor | None = None


class SignalSource:
    def for_readout(self, readout) -> SignalSource:
        """This source for a network with ``readout`` (the e-prop rules call it; feedback matrices that stand
        for the readout's weights take its input scale). Default: unchanged."""
        return self

    def init_state(self, batch: int, dtype=torch.float32, device=None):
        return None

    def run(self, params, obs: Observation):
        return self.sequence(params, obs), None

    def sequence(self, params, obs: Observation) -> torch.Tensor:
        state = self.init_state(obs.error.shape[0], obs.error.dtype, obs.error.device)
        signals = []
        for t in range(obs.error.shape[1]):
            state, signal = self.step(params, state, Observation(*(None if f is None else f[:, t] for f in obs)))
            signals.append(signal)
        return torch.stack(signals, 1)
