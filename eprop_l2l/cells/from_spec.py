"""Cells and readouts rebuilt from their records (:mod:`.spec`): the inverse of ``cell.spec``, used where a
model is read back from an exported rule. Separate from the records so that the cells, which write their own
``spec``, and the records import nothing of each other in a cycle."""

from __future__ import annotations

import math

from ..errors import ConfigError
from .alif import ALIF
from .cuba_lif import CubaLIF
from .lif import LIF
from .readout import LeakyReadout
from .spec import NEURON_MODELS, REFRACTORY, RESET, CurrentSpec, NeuronSpec, ReadoutSpec


def cell_from_spec(spec: NeuronSpec, n_in: int):
    """The cell whose ``spec`` is ``spec`` (``cell_from_spec(cell.spec, cell.n_in) == cell``)."""
    if spec.reset != RESET or spec.refractory != REFRACTORY:
        raise ConfigError("neuron spec", f"unsupported reset/refractory convention {spec.reset!r}/{spec.refractory!r}")
    alpha = math.exp(-spec.dt_ms / spec.tau_m_ms)
    if math.isclose(spec.input_scale, 1.0):
        scaling = "new"
    elif math.isclose(spec.input_scale, 1.0 - alpha):
        scaling = "old"
    else:
        raise ConfigError("neuron spec.input_scale", f"must be 1 or 1 - alpha, got {spec.input_scale!r}")
    common = dict(n_in=n_in, n_rec=spec.n, tau_m=spec.tau_m_ms, v_th=spec.v_th, n_ref=spec.n_ref,
                  gamma_pd=spec.gamma_pd, surrogate=spec.surrogate, input_scaling=scaling, dt_ms=spec.dt_ms)
    if spec.model == "lif":
        return LIF(**common)
    if spec.model == "alif":
        n_adaptive = None if spec.n_adaptive == spec.n else spec.n_adaptive
        return ALIF(**common, tau_a=spec.tau_a_ms, beta=spec.beta, n_adaptive=n_adaptive)
    if spec.model == "cuba_lif":
        if not isinstance(spec, CurrentSpec):
            raise ConfigError("neuron spec.tau_syn_ms", "missing (a cuba_lif population needs its synaptic constant)")
        return CubaLIF(**common, tau_syn=spec.tau_syn_ms)
    raise ConfigError("neuron spec.model", f"unknown model {spec.model!r} (choose from {', '.join(NEURON_MODELS)})")


def readout_from_spec(spec: ReadoutSpec):
    """The readout whose ``spec`` is ``spec``."""
    kappa = math.exp(-spec.dt_ms / spec.tau_out_ms)
    scaling = "new" if math.isclose(spec.input_scale, 1.0) else "old"
    if scaling == "old" and not math.isclose(spec.input_scale, 1.0 - kappa):
        raise ConfigError("readout spec.input_scale", f"must be 1 or 1 - kappa, got {spec.input_scale!r}")
    return LeakyReadout(spec.n_in, spec.n_out, tau_out=spec.tau_out_ms, dt_ms=spec.dt_ms, input_scaling=scaling,
                        bias=spec.bias)
