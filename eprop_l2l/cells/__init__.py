"""The differentiable cell library: every recurrent unit is a pure ``step`` over explicit parameter and state
records plus its local (neuron-internal) Jacobians. See :mod:`.base` for the contract."""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .alif import ALIF, ALIFState
from .cuba_lif import CubaLIF, CubaLIFState
from .lif import LIF, LIFState
from .lstm import LSTM, LSTMState
from .network import RecurrentNetwork
from .rate import RateRNN, RateState
from .readout import LeakyReadout
from .simulate import Trajectory, simulate
from .spike import pseudo_derivative, spike

CELLS: dict[str, type] = {"lif": LIF, "alif": ALIF, "cuba_lif": CubaLIF, "lstm": LSTM, "rate": RateRNN}


def make_cell(name: str, **fields):
    """The cell registered as ``name`` (lif, alif, cuba_lif, lstm, rate) with the given fields, validated."""
    if not isinstance(name, str) or name not in CELLS:
        raise ConfigError("cell", f"unknown cell {name!r} (choose from {', '.join(sorted(CELLS))})")
    cls = CELLS[name]
    known = {f.name for f in dataclasses.fields(cls)}
    for key in fields:
        if key not in known:
            raise ConfigError(f"{name}.{key}", f"unknown field (choose from {', '.join(sorted(known))})")
    return cls(**fields)
