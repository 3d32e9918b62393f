"""Hardware-neutral descriptions of the spiking populations and the leaky readout: every constant of the
dynamics, stated once.

A spiking cell (:class:`~eprop_l2l.cells.lif.LIF`, :class:`~eprop_l2l.cells.alif.ALIF`,
:class:`~eprop_l2l.cells.cuba_lif.CubaLIF` with its :class:`CurrentSpec`) builds its :class:`NeuronSpec` from its
fields, and its ``step``, its pseudo-derivative, its closed-form traces and the
hardware export all read the constants from that record (``cell.spec.alpha``, ...). An exported model stores
``spec.to_dict()``; :func:`cell_from_spec` turns it back into the same cell, so export never re-derives a
constant with a formula of its own.

Conventions (Bellec et al. 2020, "new" convention; one time step ``dt_ms``):

    v^t = α v^{t-1} + s·(W^rec z^{t-1} + W^in x^t) − v_th z^{t-1}        α = exp(−dt/τ_m)
    a^t = ρ a^{t-1} + z^{t-1}                                            ρ = exp(−dt/τ_a)   (adaptive neurons)
    z^t = H((v^t − v_th − β a^t)/v_th), blocked while the refractory counter is > 0
    ψ^t = (γ/v_th)·pd((v^t − v_th − β a^t)/v_th), 0 while refractory

with ``reset = "subtract_v_th_next_step"`` and the refractory counter of the authors' code
(``r^t = clip(r^{t-1} + n_ref·z^t − 1, 0, n_ref)``, spiking blocked at t while r^{t-1} > 0).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from ..errors import ConfigError, require_positive

RESET = "subtract_v_th_next_step"
REFRACTORY = "counter_blocks_spike_and_masks_psi"
NEURON_MODELS = ("lif", "alif", "cuba_lif")


@dataclass(frozen=True)
class NeuronSpec:
    """Constants of one population of LIF/ALIF neurons (the last ``n_adaptive`` neurons adapt with ``beta``)."""

    model: str  # "lif" | "alif"
    n: int
    dt_ms: float
    tau_m_ms: float
    v_th: float
    n_ref: int
    input_scale: float  # s: 1 ("new" convention) or 1 − α ("old", LightLIF)
    surrogate: str  # pseudo-derivative shape: triangle | fast_sigmoid
    gamma_pd: float
    tau_a_ms: float | None = None  # alif only
    beta: float = 0.0  # alif only
    n_adaptive: int = 0  # alif only
    reset: str = RESET
    refractory: str = REFRACTORY

    @property
    def alpha(self) -> float:
        """Membrane decay per step."""
        return math.exp(-self.dt_ms / self.tau_m_ms)

    @property
    def rho(self) -> float:
        """Adaptation decay per step (1 for a population without adaptation)."""
        return 1.0 if self.tau_a_ms is None else math.exp(-self.dt_ms / self.tau_a_ms)

    def beta_per_neuron(self) -> list[float]:
        """β of each neuron: 0 for the first ``n − n_adaptive`` (plain LIF), ``beta`` for the rest."""
        return [0.0] * (self.n - self.n_adaptive) + [float(self.beta)] * self.n_adaptive

    def to_dict(self) -> dict:
        """JSON-ready record; the derived decays are included for readers that do not recompute them."""
        return {**dataclasses.asdict(self), "alpha": self.alpha, "rho": self.rho}

    @classmethod
    def from_dict(cls, record: dict) -> NeuronSpec:
        """The record's spec: a :class:`CurrentSpec` for a current-based population (``model = "cuba_lif"``)."""
        if cls is NeuronSpec and isinstance(record, dict) and record.get("model") == "cuba_lif":
            return CurrentSpec.from_dict(record)
        return cls(**_fields_of(cls, record, "neuron spec"))


@dataclass(frozen=True)
class CurrentSpec(NeuronSpec):
    """Constants of a current-based LIF population (:class:`~eprop_l2l.cells.cuba_lif.CubaLIF`): the input
    charges a synaptic current that decays with τ_syn and drives the membrane,

        i^t = α_s i^{t-1} + s·(W^rec z^{t-1} + W^in x^t)                    α_s = exp(−dt/τ_syn)
        v^t = α v^{t-1} + i^t − v_th z^{t-1}

    (spike, reset and refractory counter as above). A subclass, so that the records of the LIF/ALIF
    populations (and the hardware rule files holding them) keep their keys."""

    tau_syn_ms: float | None = None

    def __post_init__(self):
        require_positive("neuron spec.tau_syn_ms", self.tau_syn_ms)

    @property
    def alpha_syn(self) -> float:
        """Synaptic-current decay per step."""
        return math.exp(-self.dt_ms / self.tau_syn_ms)

    def to_dict(self) -> dict:
        return {**super().to_dict(), "alpha_syn": self.alpha_syn}


@dataclass(frozen=True)
class ReadoutSpec:
    """Leaky readout y^t = κ y^{t-1} + s·W^out z^t + b, κ = exp(−dt/τ_out)."""

    n_in: int
    n_out: int
    dt_ms: float
    tau_out_ms: float
    input_scale: float
    bias: bool

    @property
    def kappa(self) -> float:
        return math.exp(-self.dt_ms / self.tau_out_ms)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "kappa": self.kappa}

    @classmethod
    def from_dict(cls, record: dict) -> ReadoutSpec:
        return cls(**_fields_of(cls, record, "readout spec"))


def _fields_of(cls, record: dict, what: str) -> dict:
    if not isinstance(record, dict):
        raise ConfigError(what, f"expected a mapping, got {type(record).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    required = {f.name for f in dataclasses.fields(cls)
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
    missing = sorted(required - set(record))
    if missing:
        raise ConfigError(what, f"missing {', '.join(missing)}")
    return {k: v for k, v in record.items() if k in names}
