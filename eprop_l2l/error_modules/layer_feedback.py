"""Learning signals for every layer of a feedforward network (:class:`~eprop_l2l.cells.feedforward.FeedforwardNetwork`)
from its output error err^t = ∂E/∂y^t, as SuperSpike-style rules use them (:mod:`eprop_l2l.inner_loop.superspike`):

* ``symmetric``: the error travels down the transposed weights, L^{last} = s_out·W_outᵀ err and
  L^l = s_{l+1}·W_{l+1}ᵀ L^{l+1} (s: the input scale of the population a weight drives);
* ``random`` (broadcast, direct feedback alignment): L^l = B_l err with a fixed ``b_fb_{l}`` [n_l, n_out] per layer,
  drawn once as e-prop's random feedback matrix is (N(0,1)/√n_l).

What either sum equals, and where it is the exact gradient, is stated by the rule (``superspike``'s docstring).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..cells.base import Params
from ..errors import ConfigError, require_choice, require_count
from ..numerics.linalg import linear
from .feedback import Feedback

LAYER_FEEDBACK_KINDS = ("symmetric", "random")


def feedback_name(layer: int) -> str:
    """The parameter of the random feedback matrix into ``layer``."""
    return f"b_fb_{layer}"


@dataclass(frozen=True)
class LayerFeedback:
    kind: str
    sizes: tuple[int, ...]  # neurons per layer
    n_out: int

    learned_between_trials = False  # the matrices stay as drawn (compare's and the training loop's contract)

    def __post_init__(self):
        require_choice("feedback.kind", self.kind, LAYER_FEEDBACK_KINDS)
        if not self.sizes:
            raise ConfigError("feedback.sizes", "name at least one layer")
        for index, n in enumerate(self.sizes):
            require_count(f"feedback.sizes[{index}]", n)
        require_count("feedback.n_out", self.n_out)

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        if self.kind == "symmetric":
            return {}
        return {feedback_name(index): Feedback("random", n, self.n_out).init_params(generator, dtype)["b_fb"]
                for index, n in enumerate(self.sizes)}

    def signals(self, network, params: Params, error: torch.Tensor) -> list[torch.Tensor]:
        """L^l ``[B, T, n_l]`` for every layer, lowest first, from err ``[B, T, n_out]``."""
        if self.kind == "random":
            return [linear(params[feedback_name(index)], error) for index in range(len(self.sizes))]
        top = Feedback("symmetric", self.sizes[-1], self.n_out).for_readout(network.readout).signal(params, error)
        signals = [top]
        for index in range(len(self.sizes) - 1, 0, -1):  # down through layer index's weights into index − 1
            cell = network.layers[index]
            signals.insert(0, linear(params[network.weight_names[index]].mT, signals[0], scale=cell.input_scale))
        return signals
