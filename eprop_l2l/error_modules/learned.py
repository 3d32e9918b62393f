"""A learned error module (e-prop 2, Bellec et al. 2019; the learning-signal generator of natural e-prop,
Scherr et al. 2020): a recurrent network from the same cell library whose filtered activity is projected to
one learning signal per learning-network neuron,

    ζ^t = cell(input^t),   L^t = Ψ F_decay(ζ)^t        (Ψ ∈ R^{n_learner × n_em}, meta-learned)

``input^t`` concatenates what the module is allowed to see, each switchable: the task context (e.g. the
population-coded target movement), the learning network's spikes z^t (e-prop 2: yes; natural e-prop: no),
the learning network's input x^t (the clock) and, off by default, the path the learner's own output produces
through the family's plant, in the same population code as the target path (as its spike probabilities, so
that the outer loop differentiates through it). With decay = e^{-δt/20 ms} this is both the F_α(ζ)·Ψ of the
e-prop 2 code and the leaky learning signal L^t = α_e L^{t-1} + Ψ ξ^t of natural e-prop (the same recursion).

Its parameters are its own tree, ``{"cell": the cell's weights, "proj": Ψ}`` (the meta-parameters hold it as their
``error_module`` population: ``meta.params``). Every method takes a mapping that holds that tree's two entries —
the tree itself, or the e-prop rules' view of the network's weights with the source's merged in (the two never
share a name).
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass

import torch

from ..cells.base import Params, RecurrentCell, gaussian
from ..cells.simulate import Trajectory, simulate_currents
from ..errors import ConfigError, require_count, require_positive
from ..numerics.filters import causal_filter
from ..numerics.linalg import linear
from .base import Observation, SignalSource


@dataclass(frozen=True)
class LearnedErrorModule(SignalSource):
    cell: object  # any cell of the library; its n_in must equal ``input_width``
    n_learner: int  # learning-network neurons: one signal each
    n_context: int = 0
    n_inputs: int = 0
    use_context: bool = True
    use_spikes: bool = True
    use_inputs: bool = True
    signal_tau: float = 20.0  # ms; decay of the filter F on ζ
    projection_scale: float = 1.0  # Ψ ~ projection_scale · N(0, 1)/√n_em
    fast_loop: bool = False  # spiking cells: time loop with the hand-written backward (numerics/fused_loop.py)
    use_produced_path: bool = False
    plant: object | None = None  # the family's plant (task_families: ArmTrials.plant), for use_produced_path
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): decay = exp(-dt_ms/signal_tau)

    reads_error = False  # the module's signals come from what it sees, never from the output error

    def __post_init__(self):
        require_count("error_module.n_learner", self.n_learner)
        require_count("error_module.n_context", self.n_context, minimum=0)
        require_count("error_module.n_inputs", self.n_inputs, minimum=0)
        require_positive("error_module.signal_tau", self.signal_tau)
        require_positive("error_module.dt_ms", self.dt_ms)
        if self.use_produced_path and self.plant is None:
            raise ConfigError("error_module.use_produced_path", "needs a family with a plant (the arm families)")
        if self.input_width == 0:
            raise ConfigError("error_module.use_context", "the error module sees nothing: enable at least one input")
        if self.cell.n_in != self.input_width:
            raise ConfigError("error_module.cell.n_in", f"must equal the input width {self.input_width}, "
                              f"got {self.cell.n_in}")

    @property
    def information(self) -> frozenset[str]:
        """What the module reads of the demonstration (eprop_l2l.information); never the motor targets."""
        used = (("target_path", self.use_context and self.n_context > 0),
                ("learner_spikes", self.use_spikes), ("clock", self.use_inputs and self.n_inputs > 0),
                ("produced_path", self.use_produced_path))
        return frozenset(name for name, on in used if on)

    @property
    def input_width(self) -> int:
        return (self.n_context * self.use_context + self.n_learner * self.use_spikes
                + self.n_inputs * self.use_inputs + self.n_path)

    @property
    def n_path(self) -> int:
        """Width of the produced-path input (0 when off)."""
        return self.plant.n_code if self.use_produced_path else 0

    def produced_path(self, obs: Observation) -> torch.Tensor:
        """The coded hand path of the learner's output ``[B, T, n_path]`` (the whole trial: the plant integrates)."""
        if obs.output.dim() < 3:
            raise ConfigError("error_module.use_produced_path", "the produced path needs whole trials (fused "
                              "e-prop); the step-by-step form has no plant state")
        return self.plant.code(self.plant.path(obs.output))

    @property
    def decay(self) -> float:
        return math.exp(-self.dt_ms / self.signal_tau)

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> dict:
        cell_params = self.cell.init_params(generator, dtype)
        n_em = self.cell.n_rec
        projection = gaussian((self.n_learner, n_em), self.projection_scale / math.sqrt(n_em), generator, dtype)
        return {"cell": cell_params, "proj": projection}

    @staticmethod
    def cell_params(params: dict) -> Params:
        return params["cell"]

    def module_input(self, obs: Observation) -> torch.Tensor:
        parts = []
        if self.use_context:
            parts.append(self._context(obs))
        if self.use_spikes:
            parts.append(obs.spikes)
        if self.use_inputs:
            parts.append(obs.inputs)
        if self.use_produced_path:
            parts.append(self.produced_path(obs))
        return torch.cat(parts, -1)

    def _context(self, obs: Observation) -> torch.Tensor:
        if obs.context is None:
            raise ConfigError("error_module.use_context", "the task provides no context input")
        return obs.context

    @property
    def _current_is_product(self) -> bool:
        """The cell's input current is ``s·W^in x`` (spiking and rate cells), so it can be computed part by
        part; not for cells that add more (an LSTM's bias)."""
        return type(self.cell).input_current is RecurrentCell.input_current

    def _input_weights(self, params: dict) -> dict[str, torch.Tensor]:
        """Columns of the cell's ``w_in`` per input part, in the order of :meth:`module_input`."""
        widths = {"context": self.n_context * self.use_context, "spikes": self.n_learner * self.use_spikes,
                  "inputs": self.n_inputs * self.use_inputs, "produced_path": self.n_path}
        parts = params["cell"]["w_in"].split(list(widths.values()), -1)
        return {name: w for (name, width), w in zip(widths.items(), parts, strict=True) if width}

    def fixed_drive(self, params: dict, obs: Observation) -> torch.Tensor | None:
        """Input current from the context and the network's inputs ``[B, T, n_em]``: the same in every trial of
        a task batch, so a caller running several trials computes it once (``Observation.drive``). None for
        cells whose input current is more than a product (:meth:`input_current` then projects everything)."""
        if not self._current_is_product:
            return None
        weights = self._input_weights(params)
        context = self._context(obs) if self.use_context else None
        parts = [linear(weights[k], v) for k, v in (("context", context), ("inputs", obs.inputs)) if k in weights]
        if not parts:
            return None
        drive = parts[0] if len(parts) == 1 else parts[0] + parts[1]
        scale = self.cell.input_scale
        return drive if scale == 1.0 else scale * drive

    def input_current(self, params: dict, obs: Observation) -> torch.Tensor:
        """``cell.input_current`` of :meth:`module_input` for a whole trial, one projection per input part (no
        concatenated copy; only the spikes' part carries a gradient back to the learning network)."""
        if not self._current_is_product:  # one product of everything
            return self.cell.input_current(self.cell_params(params), self.module_input(obs))
        drive = obs.drive if obs.drive is not None else self.fixed_drive(params, obs)
        weights = self._input_weights(params)
        per_trial = [(weights["spikes"], obs.spikes)] if self.use_spikes else []
        if self.use_produced_path:
            per_trial.append((weights["produced_path"], self.produced_path(obs)))
        for w, part in per_trial:
            current = linear(w, part, scale=self.cell.input_scale)
            drive = current if drive is None else drive + current
        return drive

    def init_state(self, batch: int, dtype=torch.float32, device=None):
        filtered = torch.zeros(batch, self.cell.n_rec, dtype=dtype, device=device)
        return self.cell.init_state(batch, dtype, device), filtered

    def step(self, params: dict, state, obs: Observation):
        cell_state, filtered = state
        cell_state, zeta = self.cell.step(self.cell_params(params), cell_state, self.module_input(obs))
        filtered = self.decay * filtered + zeta
        return (cell_state, filtered), linear(params["proj"], filtered)

    def activity(self, params: dict, obs: Observation) -> Trajectory:
        """The module's own trial without its learning signals (what a trial whose signals are not used, e.g.
        the test trial of e-prop 2, needs for the rate regulariser)."""
        return simulate_currents(self.cell, self.cell_params(params), self.input_current(params, obs),
                                 fast=self.fast_loop)

    def run(self, params: dict, obs: Observation) -> tuple[torch.Tensor, Trajectory]:
        """Whole trial: learning signals ``[B, T, n_learner]`` and the module's own trajectory (its spikes
        enter the outer loop's rate regulariser)."""
        trajectory = self.activity(params, obs)
        return linear(params["proj"], causal_filter(trajectory.outputs, self.decay)), trajectory

    def sequence(self, params: dict, obs: Observation) -> torch.Tensor:
        return self.run(params, obs)[0]
