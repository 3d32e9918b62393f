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

FEEDBACK_KINDS = ("symmetric", "random", "adaptive")
# the kinds meta-training can use: an adaptive B needs its own update between trials (inner_loop.train), which
# the one-shot inner loop does not run
META_FEEDBACK_KINDS = ("random", "symmetric")


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

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        if self.kind == "symmetric":
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
        if self.kind == "random" or self.readout_scale == readout.input_scale:
            return self
        return replace(self, readout_scale=readout.input_scale)

    def matrix(self, params: Params) -> torch.Tensor:
        """B ``[n_rec, n_out]`` (or ``[B, n_rec, n_out]`` with per-task readouts)."""
        if self.kind == "random":
            return params["b_fb"]
        b = params["w_out"].mT if self.kind == "symmetric" else params["b_fb"]
        return b if self.readout_scale == 1.0 else self.readout_scale * b

    def signal(self, params: Params, error: torch.Tensor) -> torch.Tensor:
        return linear(self.matrix(params), error)

    def step(self, params: Params, state, obs: Observation):
        return state, self.signal(params, obs.error)

    def sequence(self, params: Params, obs: Observation) -> torch.Tensor:
        return self.signal(params, obs.error)

    def adaptive_grad(self, params: Params, w_out_grad: torch.Tensor) -> torch.Tensor:
        """Update direction of ``b_fb``: that of (W^out)ᵀ plus decay·``b_fb`` (B = s·``b_fb`` then follows
        s·(W^out)ᵀ, the symmetric matrix)."""
        if self.kind != "adaptive":
            raise ValueError(f"feedback.kind: adaptive_grad needs kind 'adaptive', got {self.kind!r}")
        return w_out_grad.mT + self.decay * params["b_fb"]
