"""e-prop 1 learning signals: the output error broadcast through a feedback matrix, L_j^t = Σ_k B_jk err_k^t.

* ``symmetric``: B = s·(W^out)ᵀ, with s the readout's input scale (y = κy + s·W^out z + b; s = 1, or 1 − κ
  for ``input_scaling="old"``) — with κ-filtered traces this is exactly ∂E/∂z_j^t (partial derivative);
* ``random``: B fixed at initialisation (random broadcast alignment), ``b_fb ~ scale·N(0,1)``;
* ``adaptive``: B = s·``b_fb``; ``b_fb`` starts random and receives the same update as (W^out)ᵀ plus weight
  decay (Bellec et al. 2020, TIMIT: ``readout_decay``), so that B tracks the symmetric s·(W^out)ᵀ.
  :meth:`Feedback.adaptive_grad` gives that update direction.

The e-prop rules set s from the network's readout (:meth:`Feedback.for_readout`); a feedback used on its own
has ``readout_scale`` 1.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import torch

from ..cells.base import Params, gaussian
from ..errors import require_choice, require_count, require_non_negative, require_positive
from ..numerics.linalg import linear
from .base import Observation, SignalSource


@dataclass(frozen=True)
class FeedbackKind:
    """What one kind of feedback matrix is; the list of kinds is :data:`KINDS`, and nothing else names them."""

    own_matrix: bool  # B is a parameter of its own, b_fb (else the readout's (W^out)ᵀ)
    scaled_by_readout: bool  # B carries the readout's input scale s (∂y/∂z = s·W^out)
    # b_fb is learned between trials (adaptive_grad): the plain training loop and compare run that update; the
    # one-shot inner loop of meta-training does not, so meta-training cannot use such a kind
    learned_between_trials: bool


KINDS = {"symmetric": FeedbackKind(own_matrix=False, scaled_by_readout=True, learned_between_trials=False),
         "random": FeedbackKind(own_matrix=True, scaled_by_readout=False, learned_between_trials=False),
         "adaptive": FeedbackKind(own_matrix=True, scaled_by_readout=True, learned_between_trials=True)}
FEEDBACK_KINDS = tuple(KINDS)
META_FEEDBACK_KINDS = tuple(name for name, kind in KINDS.items() if not kind.learned_between_trials)


@dataclass(frozen=True)
class Feedback(SignalSource):
    kind: str
    n_rec: int
    n_out: int
    scale: float | None = None  # std of random B; default 1/√n_rec
    decay: float = 0.0  # adaptive only: weight decay added to B's update
    readout_scale: float = 1.0  # s of the readout, carried by symmetric and adaptive B (set by for_readout)

    def __post_init__(self):
        require_choice("feedback.kind", self.kind, FEEDBACK_KINDS)
        require_count("feedback.n_rec", self.n_rec)
        require_count("feedback.n_out", self.n_out)
        require_non_negative("feedback.decay", self.decay)
        require_positive("feedback.readout_scale", self.readout_scale)
        if self.scale is not None:
            require_non_negative("feedback.scale", self.scale)

    @property
    def properties(self) -> FeedbackKind:
        return KINDS[self.kind]

    @property
    def learned_between_trials(self) -> bool:
        """Whether ``b_fb`` follows the readout between trials (:meth:`adaptive_grad`)."""
        return self.properties.learned_between_trials

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        if not self.properties.own_matrix:
            return {}
        scale = 1.0 / math.sqrt(self.n_rec) if self.scale is None else self.scale
        return {"b_fb": gaussian((self.n_rec, self.n_out), scale, generator, dtype)}

    # B projects the output error the inner objective defines (inner_loop.objectives): what that error needs
    # is the objective's declaration, not the matrix's (eprop_l2l.information)
    information = frozenset()
    reads_error = True

    def for_readout(self, readout) -> Feedback:
        """This feedback for a network with ``readout``: symmetric and adaptive B carry the readout's input
        scale s (∂y/∂z = s·W^out), random B does not. The e-prop rules call it."""
        if not self.properties.scaled_by_readout or self.readout_scale == readout.input_scale:
            return self
        return replace(self, readout_scale=readout.input_scale)

    def matrix(self, params: Params) -> torch.Tensor:
        """B ``[n_rec, n_out]`` (or ``[B, n_rec, n_out]`` with per-task readouts)."""
        b = params["b_fb"] if self.properties.own_matrix else params["w_out"].mT
        return b if not self.properties.scaled_by_readout or self.readout_scale == 1.0 else self.readout_scale * b

    def signal(self, params: Params, error: torch.Tensor) -> torch.Tensor:
        return linear(self.matrix(params), error)

    def step(self, params: Params, state, obs: Observation):
        return state, self.signal(params, obs.error)

    def sequence(self, params: Params, obs: Observation) -> torch.Tensor:
        return self.signal(params, obs.error)

    def adaptive_grad(self, params: Params, w_out_grad: torch.Tensor) -> torch.Tensor:
        """Update direction of ``b_fb``: that of (W^out)ᵀ plus decay·``b_fb`` (B = s·``b_fb`` then follows
        s·(W^out)ᵀ, the symmetric matrix)."""
        if not self.learned_between_trials:
            raise ValueError(f"feedback.kind: adaptive_grad needs kind 'adaptive', got {self.kind!r}")
        return w_out_grad.mT + self.decay * params["b_fb"]


# What a signal source learns between trials (an adaptive B follows the readout), for the loops that train many
# trials: the plain training loop (inner_loop.train) and compare (inner_loop.rules.RuleRunner). Other sources
# learn nothing there: their parameters stay as given.
def trainable_source_params(source, params: Params | None) -> Params:
    """Fresh leaves of the source's parameters; those it learns between trials require grad."""
    learned = getattr(source, "learned_between_trials", False)
    return {k: v.detach().clone().requires_grad_(learned) for k, v in (params or {}).items()}


def set_source_grads(source, leaves: Params, grads: dict[str, torch.Tensor]) -> None:
    """Give the leaves of :func:`trainable_source_params` this trial's update direction (``.grad``; the
    caller's optimiser steps them): an adaptive B gets :meth:`Feedback.adaptive_grad` of the readout's
    estimate ``grads["w_out"]``."""
    if getattr(source, "learned_between_trials", False):
        leaves["b_fb"].grad = source.adaptive_grad({k: v.detach() for k, v in leaves.items()}, grads["w_out"])
