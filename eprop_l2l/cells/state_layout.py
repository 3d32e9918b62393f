"""The boundary state of a network, packed: the differentiable part of a cell's state record (the fields
through which later steps depend on the past) and the readout, as one vector per trial. Truncated BPTT carries
gradients across window boundaries through it (``inner_loop.tbptt``); a synthetic-gradient module predicts
its gradient (``error_modules.synthetic_gradient``)."""

from __future__ import annotations

from functools import lru_cache

import torch

from ..errors import ConfigError


@lru_cache(maxsize=64)
def _carried_fields(cell) -> tuple[tuple[int, ...], int]:
    """(indices of the state fields through which later steps depend on the past, index of the output field).

    Found with autograd on a small probe: a field carries if the outputs of the next three steps have a
    gradient path from it. The output field is the one ``cell.output`` returns."""
    g = torch.Generator().manual_seed(0)
    params = cell.init_params(g, torch.float64)
    state = cell.init_state(2, dtype=torch.float64)
    leaves = [f.clone().requires_grad_() for f in state]
    probe = type(state)(*leaves)
    output_index = next((i for i, f in enumerate(probe) if cell.output(probe) is f), None)
    if output_index is None:
        raise ConfigError("cell", f"{type(cell).__name__}.output must return one field of the state record")
    x = torch.rand(2, 3, cell.n_in, generator=g, dtype=torch.float64)
    total, current = 0.0, probe
    with torch.enable_grad():
        for t in range(3):
            current, out = cell.step(params, current, x[:, t])
            total = total + out.sum()
        grads = torch.autograd.grad(total, leaves, allow_unused=True)
    carried = tuple(i for i, gr in enumerate(grads) if gr is not None)
    if output_index not in carried:
        carried = tuple(sorted((*carried, output_index)))
    return carried, output_index


class StateLayout:
    """The differentiable part of the network state, packed into one vector per trial ``[B, n]``: the carried
    fields of the cell's state record (each ``[B, n_rec]``), then the readout ``y [B, n_out]``."""

    def __init__(self, cell, readout):
        self.cell, self.readout = cell, readout
        self.fields, self.output_index = _carried_fields(cell)
        names = type(cell.init_state(1))._fields
        self.field_names = tuple(names[i] for i in self.fields)
        self.width = len(self.fields) * cell.n_rec + readout.n_out

    def names(self) -> tuple[str, ...]:
        """One label per block of the packed vector (field names, then ``y``)."""
        return (*self.field_names, "y")

    def flatten(self, state, y: torch.Tensor) -> torch.Tensor:
        return torch.cat([state[i] for i in self.fields] + [y], -1)

    def split(self, flat: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        n = self.cell.n_rec
        parts = [flat[..., j * n : (j + 1) * n] for j in range(len(self.fields))]
        return parts, flat[..., len(self.fields) * n :]

    def leaves(self, state, y: torch.Tensor):
        """Detached copies of the state with the carried fields (and y) as leaves that require grad."""
        fields = [f.detach() for f in state]
        for i in self.fields:
            fields[i] = fields[i].clone().requires_grad_()
        return type(state)(*fields), y.detach().clone().requires_grad_()

    def with_output(self, state, value: torch.Tensor):
        fields = list(state)
        fields[self.output_index] = value
        return type(state)(*fields)


def state_layout(network) -> StateLayout:
    return StateLayout(network.cell, network.readout)


# -------------------------------------------------------------------------------------------------- the engine
