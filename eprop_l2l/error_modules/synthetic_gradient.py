"""A synthetic-gradient error module (Jaderberg et al. 2017, "Decoupled neural interfaces using synthetic
gradients"; the error module of e-prop 3, Bellec et al. 2019).

At a window boundary b it predicts the gradient of the future loss with respect to the network's state,

    ĉ^b = SG(S^b, context^b) ≈ ∂E_{≥b}/∂S^b,        S^b = flatten(carried cell fields, readout y)

(the packed boundary state of :class:`eprop_l2l.cells.state_layout.StateLayout`), optionally conditioned on the
task's target at the last step before the boundary (``use_target``; Jaderberg's cDNI conditions on the label).
It is trained online by regression on the bootstrapped target: the window that starts at b computes
``∂J/∂S^b`` with its own losses and the module's (detached) prediction at its end, b + k, propagated back
through the window — a TD(0)-like target for the gradient of the future (Jaderberg et al., Sect. 2).

The map is linear (``hidden = 0``) or a one-hidden-layer ReLU network. Its output layer starts at zero, so an
untrained module is plain truncation (Jaderberg et al.: "the final layer ... initialised to zero"). Parameters
are prefixed ``sg_``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..cells.base import Params, gaussian
from ..cells.state_layout import state_layout
from ..errors import require_count, require_non_negative


@dataclass(frozen=True)
class SyntheticGradient:
    n_state: int  # width of the packed boundary state (and of the predicted gradient)
    n_context: int = 0  # width of the conditioning input (the target at the boundary), 0: none
    hidden: int = 0  # 0: linear; else one hidden ReLU layer of this width
    output_init: float = 0.0  # std of the initial output layer (0: starts as plain truncation)

    def __post_init__(self):
        require_count("synthetic_gradient.n_state", self.n_state)
        require_count("synthetic_gradient.n_context", self.n_context, minimum=0)
        require_count("synthetic_gradient.hidden", self.hidden, minimum=0)
        require_non_negative("synthetic_gradient.output_init", self.output_init)

    @classmethod
    def for_network(cls, network, use_target: bool = True, hidden: int = 0, output_init: float = 0.0):
        """The module for ``network``'s boundary state, conditioned on the target if ``use_target``."""
        n_context = network.readout.n_out if use_target else 0
        return cls(state_layout(network).width, n_context, hidden, output_init)

    @property
    def n_features(self) -> int:
        return self.n_state + self.n_context

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        n_in = self.n_features
        if self.hidden == 0:
            w = gaussian((self.n_state, n_in), self.output_init / math.sqrt(n_in), generator, dtype)
            return {"sg_w": w, "sg_b": torch.zeros(self.n_state, dtype=dtype)}
        w1 = gaussian((self.hidden, n_in), 1.0 / math.sqrt(n_in), generator, dtype)
        w2 = gaussian((self.n_state, self.hidden), self.output_init / math.sqrt(self.hidden), generator, dtype)
        return {"sg_w1": w1, "sg_b1": torch.zeros(self.hidden, dtype=dtype), "sg_w": w2,
                "sg_b": torch.zeros(self.n_state, dtype=dtype)}

    def features(self, state: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``[B, n_state]`` (+ ``[B, n_context]``) → ``[B, n_features]``."""
        if self.n_context == 0:
            return state
        if context is None:
            raise ValueError("synthetic_gradient: the module is conditioned on a context, none was given")
        return torch.cat([state, context.to(state.dtype)], -1)

    def predict(self, params: Params, features: torch.Tensor) -> torch.Tensor:
        h = features
        if self.hidden:
            h = torch.relu(h @ params["sg_w1"].mT + params["sg_b1"])
        return h @ params["sg_w"].mT + params["sg_b"]

    def boundary(self, params: Params, targets: torch.Tensor | None = None) -> Callable:
        """The ``boundary(b, S^b)`` callback of the truncated rules for one batch (``targets [B, T, K]``)."""
        detached = {k: v.detach() for k, v in params.items() if k.startswith("sg_")}

        def predict(b: int, state: torch.Tensor) -> torch.Tensor:
            context = None if self.n_context == 0 else targets[:, b - 1]
            with torch.no_grad():
                return self.predict(detached, self.features(state, context))

        return predict

    def loss(self, params: Params, result, targets: torch.Tensor | None = None) -> torch.Tensor:
        """Regression loss on a trial's boundaries: mean over boundaries and trials of ½‖ĉ^b − target^b‖²,
        with the bootstrapped targets of a truncated rule's result (``boundary_states``, ``boundary_targets``).
        Zero (a tensor) when the trial had no inner boundary."""
        terms = []
        for b, state, target in zip(result.boundary_steps, result.boundary_states, result.boundary_targets,
                                    strict=True):
            context = None if self.n_context == 0 else targets[:, b - 1]
            prediction = self.predict(params, self.features(state, context))
            terms.append(0.5 * ((prediction - target) ** 2).sum(-1).mean())
        if not terms:
            return torch.zeros((), dtype=params["sg_w"].dtype, device=params["sg_w"].device)
        return torch.stack(terms).mean()
