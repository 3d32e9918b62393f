"""A feedforward multi-layer spiking network built from the library's cells: layer 0 reads the input, layer l
reads the spikes of layer l − 1, the leaky readout reads the last layer.

A layer is a spiking cell (LIF, ALIF, current-based LIF) whose recurrent weights are zero: its ``step``, its
pseudo-derivative ψ and its closed-form traces (``cell.adjoint``) are the cell's own, so the layer-wise rules
(:mod:`eprop_l2l.inner_loop.superspike`, :mod:`eprop_l2l.inner_loop.decolle`) compute each layer's
eligibility with the machinery e-prop uses, ψ^t · F_α(s·pre)^t. The weights into layer l are ``w_{l}``
(``w_0`` from the input); the readout's are ``w_out``/``b_out``.

Because no layer feeds back, running the layers one after another over the whole trial gives the same values
and gradients as stepping all of them together (:meth:`FeedforwardNetwork.step`, the pure step); :meth:`run`
does the former, so every layer uses the cell's whole-trial loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import ConfigError
from .base import Params
from .readout import LeakyReadout
from .simulate import Trajectory, simulate
from .spiking import SpikingNeurons

LAYER_CELLS = ("lif", "alif", "cuba_lif")  # the library's cells a layer can be (the spiking ones)


def weight_name(layer: int) -> str:
    """The parameter of the weights into ``layer`` (``w_0``: from the input)."""
    return f"w_{layer}"


class FeedforwardTrajectory(NamedTuple):
    """The trajectories of a trial's layers, in order (each a cell :class:`~.simulate.Trajectory`)."""

    layers: tuple[Trajectory, ...]

    @property
    def outputs(self) -> torch.Tensor:
        """The last layer's spikes ``[B, T, n]`` (what the readout reads)."""
        return self.layers[-1].outputs

    def presynaptic(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        """What the weights into ``layer`` multiply at step t: x^t for layer 0, else z^t of the layer below."""
        return x if layer == 0 else self.layers[layer - 1].outputs


class FeedforwardState(NamedTuple):
    layers: tuple  # one cell state record per layer
    y: torch.Tensor  # readout [B, n_out]


@dataclass(frozen=True)
class FeedforwardNetwork:
    layers: tuple  # spiking cells; layers[l].n_in == layers[l - 1].n_rec
    readout: LeakyReadout

    def __post_init__(self):
        object.__setattr__(self, "layers", tuple(self.layers))
        if not self.layers:
            raise ConfigError("feedforward.layers", "name at least one layer")
        for index, cell in enumerate(self.layers):
            if not isinstance(cell, SpikingNeurons):
                raise ConfigError(f"feedforward.layers[{index}]", f"must be a spiking cell ({', '.join(LAYER_CELLS)}),"
                                  f" got {type(cell).__name__}")
            if index and cell.n_in != self.layers[index - 1].n_rec:
                raise ConfigError(f"feedforward.layers[{index}].n_in", f"must equal the {self.layers[index - 1].n_rec}"
                                  f" neurons of layer {index - 1}, got {cell.n_in}")
        if self.readout.n_in != self.layers[-1].n_rec:
            raise ConfigError("feedforward.readout.n_in", f"must equal the {self.layers[-1].n_rec} neurons of the "
                              f"last layer, got {self.readout.n_in}")

    @classmethod
    def of_cells(cls, make, n_in: int, sizes, readout_of) -> FeedforwardNetwork:
        """Layers of ``sizes`` neurons: ``make(n_in=…, n_rec=…)`` builds each cell, ``readout_of(n_last)`` the
        readout. ``sizes`` is refused (one line, ``feedforward.sizes``) unless it is one or more counts."""
        sizes = tuple(sizes) if isinstance(sizes, list | tuple) else sizes
        if (not isinstance(sizes, tuple) or not sizes
                or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in sizes)):
            raise ConfigError("feedforward.sizes", f"must be one or more layer sizes >= 1, got {sizes!r}")
        inputs = (n_in, *sizes[:-1])
        return cls(tuple(make(n_in=a, n_rec=b) for a, b in zip(inputs, sizes, strict=True)), readout_of(sizes[-1]))

    @property
    def sizes(self) -> tuple[int, ...]:
        return tuple(cell.n_rec for cell in self.layers)

    @property
    def cell(self):
        """The last layer's cell: what the readout reads, and what a report names the network's neurons by."""
        return self.layers[-1]

    @property
    def weight_names(self) -> tuple[str, ...]:
        return tuple(weight_name(index) for index in range(len(self.layers)))

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        """Each layer's weights as its cell draws its input weights (N(0,1)/√n_in), then the readout's."""
        params = {name: cell.init_params(generator, dtype)["w_in"]
                  for name, cell in zip(self.weight_names, self.layers, strict=True)}
        return {**params, **self.readout.init_params(generator, dtype)}

    def layer_params(self, params: Params, layer: int) -> Params:
        """The cell parameters of ``layer``: its weights as ``w_in`` and no recurrent weights (a zero ``w_rec``,
        so that the cell's own step, traces and adjoint apply unchanged)."""
        w = params[weight_name(layer)]
        n = self.layers[layer].n_rec
        return {"w_in": w, "w_rec": torch.zeros(n, n, dtype=w.dtype, device=w.device)}

    def check(self, params: Params, x: torch.Tensor) -> None:
        """Shapes of the weights and the input, each refused with a line naming it, before any compute."""
        for index, (name, cell) in enumerate(zip(self.weight_names, self.layers, strict=True)):
            if name not in params:
                raise ConfigError(f"params.{name}", "missing")
            if tuple(params[name].shape) != (cell.n_rec, cell.n_in):
                raise ConfigError(f"params.{name}", f"expected shape {(cell.n_rec, cell.n_in)} (layer {index}), got "
                                  f"{tuple(params[name].shape)}")
        if x.shape[-1] != self.layers[0].n_in:
            raise ConfigError("inputs", f"expected {self.layers[0].n_in} input channels, got {x.shape[-1]}")

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> FeedforwardState:
        return FeedforwardState(tuple(cell.init_state(batch, dtype, device) for cell in self.layers),
                                self.readout.init_state(batch, dtype, device))

    def step(self, params: Params, state: FeedforwardState, x: torch.Tensor,
             paths: str = "full") -> tuple[FeedforwardState, torch.Tensor]:
        """One time step of every layer and the readout: ``(state, y^t)``."""
        pre, layers = x, []
        for index, cell in enumerate(self.layers):
            layer_state, pre = cell.step(self.layer_params(params, index), state.layers[index], pre, paths)
            layers.append(layer_state)
        y = self.readout.step(params, state.y, pre)
        return FeedforwardState(tuple(layers), y), y

    def run(self, params: Params, x: torch.Tensor, paths: str = "full",
            fast: bool = False) -> tuple[FeedforwardTrajectory, torch.Tensor]:
        """Whole trial ``x [B, T, n_in]``: the layers' trajectories and the readout ``y [B, T, n_out]``;
        ``paths`` and ``fast`` as in :func:`~.simulate.simulate` (without lateral weights ``"local"`` is
        ``"no_reset"``)."""
        self.check(params, x)
        pre, layers = x, []
        for index, cell in enumerate(self.layers):
            trajectory = simulate(cell, self.layer_params(params, index), pre, paths=paths, fast=fast)
            layers.append(trajectory)
            pre = trajectory.outputs
        return FeedforwardTrajectory(tuple(layers)), self.readout.run(params, pre)
