"""DECOLLE's fixed random local readouts (Kaiser, Mostafa & Neftci 2020): every layer of a feedforward network
but the last predicts the target through a readout of its own, y_l = F_κ(s·G_l z^l), whose weights ``g_ro_{l}``
[n_out, n_l] are drawn once and never learned; the last layer's local readout is the network's own, which
learns. The rule that learns from them is :mod:`eprop_l2l.inner_loop.decolle`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ..cells.base import Params
from ..cells.readout import LeakyReadout
from ..errors import ConfigError, require_count


def readout_name(layer: int) -> str:
    """The parameter of ``layer``'s fixed local readout."""
    return f"g_ro_{layer}"


@dataclass(frozen=True)
class LocalReadouts:
    sizes: tuple[int, ...]  # neurons per layer
    readout: LeakyReadout  # the network's readout: the last layer's, and the model of the others

    learned_between_trials = False  # the local readouts stay as drawn

    def __post_init__(self):
        if not self.sizes:
            raise ConfigError("local_readouts.sizes", "name at least one layer")
        for index, n in enumerate(self.sizes):
            require_count(f"local_readouts.sizes[{index}]", n)
        if self.readout.n_in != self.sizes[-1]:
            raise ConfigError("local_readouts.readout.n_in", f"must equal the {self.sizes[-1]} neurons of the last "
                              f"layer, got {self.readout.n_in}")

    def local_readout(self, layer: int) -> LeakyReadout:
        """The leaky readout of ``layer``: the network's own for the last layer, else one like it (same κ and
        input scale) reading that layer, without a bias."""
        if layer == len(self.sizes) - 1:
            return self.readout
        return replace(self.readout, n_in=self.sizes[layer], bias=False)

    def weights(self, params: Params, layer: int) -> Params:
        """The parameters ``layer``'s local readout reads (the last layer: the network's ``w_out``, ``b_out``)."""
        return params if layer == len(self.sizes) - 1 else {"w_out": params[readout_name(layer)]}

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        """Each G_l drawn as its local readout draws its weights, lowest layer first."""
        return {readout_name(index): self.local_readout(index).init_params(generator, dtype)["w_out"]
                for index in range(len(self.sizes) - 1)}
