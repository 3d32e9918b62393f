"""The learned error module at a chip's precision, emulated in PyTorch (e-prop 2's learning-signal generator).

On a neuromorphic chip the module is a population of integer LIF neurons and its signal a leaky filter; the
emulation holds what such a chip holds (the same arithmetic as the fixed-point learner neuron of the Lava
program, :mod:`eprop_l2l.hardware.lava.procs.models`):

* weights: a signed ``weight_bits`` (8) mantissa with one shared power-of-two exponent per matrix (``em_w_in``,
  ``em_w_rec``, ``em_proj``), rounded to nearest; the cell's input scale s is folded into the mantissas;
* membrane: an integer in units of 2^v_exp, v_exp = (the finest of em_w_in's and em_w_rec's exponents) −
  ``v_frac_bits`` (16); the threshold is the integer round(v_th·2^−v_exp); the leak is α as a ``decay_bits`` (24)
  fraction, v ← round(v·α_m / 2^decay_bits) (α_m = round(α·2^decay_bits)); the reset subtracts the integer
  threshold one step after the spike; the refractory counter is the float model's (integers already);
* the signal: L = Ψ·F(ζ) = F(Ψ·ζ) (the filter is linear), a leaky integrator per learning neuron fed by the
  8-bit Ψ from the module's spikes: an integer in units of 2^(e_Ψ − v_frac_bits), decayed with its own
  ``decay_bits`` fraction as the membrane is; L is handed to the learner's third factor in float units (where
  the learning rule's own format rounds c·ψ·L to its y register).

Rounding is to nearest (floor(v + ½)), deterministic as a neuron's shifts are; no register saturates (the
fixed-point learner's membrane is 48 bits wide). At a wide format (40-bit mantissas, 40 fractional bits, 52-bit
decays) the emulation equals the float module to float64 precision (tested). LIF modules only: an ALIF module's
adaptive threshold has no integer model here (refused in one line).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, require_count
from ..numerics.linalg import linear
from .description import ExportError
from .rule import RuleDescription, module_neurons

MODULE_WEIGHTS = ("em_w_in", "em_w_rec", "em_proj")


@dataclass(frozen=True)
class ModuleFormat:
    weight_bits: int = 8  # signed mantissa, one exponent per matrix
    v_frac_bits: int = 16  # membrane (and signal) bits below the finest weight exponent
    decay_bits: int = 24  # the leaks α and the filter's decay as fractions of 2^decay_bits

    def __post_init__(self):
        for key in ("weight_bits", "v_frac_bits", "decay_bits"):
            require_count(f"number_format.error_module.{key}", getattr(self, key), minimum=2)

    @property
    def weight_max(self) -> int:
        return 2 ** (self.weight_bits - 1) - 1

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


LOIHI_MODULE = ModuleFormat()
WIDE_MODULE = ModuleFormat(weight_bits=40, v_frac_bits=40, decay_bits=52)
MODULE_FORMATS = {"loihi": LOIHI_MODULE, "wide": WIDE_MODULE}


def weight_exponent(w: torch.Tensor, fmt: ModuleFormat) -> int:
    """The smallest exponent e for which max|W|·2^−e fits the signed mantissa."""
    top = float(torch.as_tensor(w).abs().max())
    return math.ceil(math.log2(top / fmt.weight_max)) if top > 0 else 0


def module_exponents(rule: RuleDescription, weights: dict, fmt: ModuleFormat) -> dict:
    """The module's exponents: one per weight matrix (the input scale s folded in) and the membrane's unit."""
    _require_lif(rule)
    s = float(module_neurons(rule).input_scale)
    exps = {n: weight_exponent(s * torch.as_tensor(weights[n]).double() if n != "em_proj" else
                               torch.as_tensor(weights[n]).double(), fmt) for n in MODULE_WEIGHTS}
    exps["v"] = min(exps["em_w_in"], exps["em_w_rec"]) - fmt.v_frac_bits
    exps["signal"] = exps["em_proj"] - fmt.v_frac_bits
    return exps


def module_record(rule: RuleDescription, weights: dict, fmt: ModuleFormat = LOIHI_MODULE) -> dict:
    """What ``rule.json`` states of the module's number format (``number_format.error_module``): the format, the
    exponents, and the integer constants a chip is programmed with (threshold, leaks)."""
    exps = module_exponents(rule, weights, fmt)
    spec = module_neurons(rule)
    decay = rule.learning_signal.filter_decay
    return {**fmt.to_dict(), "weight_exp": {n: exps[n] for n in MODULE_WEIGHTS}, "v_exp": exps["v"],
            "signal_exp": exps["signal"], "v_th_int": int(round(spec.v_th * 2.0 ** (-exps["v"]))),
            "alpha_mant": int(round(spec.alpha * 2**fmt.decay_bits)),
            "filter_decay_mant": int(round(decay * 2**fmt.decay_bits))}


def emulated(rule: RuleDescription) -> bool:
    """Whether the rule's learning signal comes from an error module this emulation runs (a LIF module)."""
    return not rule.is_feedback and module_neurons(rule).model == "lif"


def _require_lif(rule: RuleDescription) -> None:
    if rule.is_feedback:
        raise ExportError("learning_signal.source", "e-prop 1's feedback signal has no error module to emulate")
    spec = module_neurons(rule)
    if spec.model != "lif":
        raise ExportError("learning_signal.neurons.model", f"{spec.model!r}: the error module at fixed-point "
                          "precision is emulated for LIF neurons only (an adaptive threshold has no integer model "
                          "here)")


def _round(x: torch.Tensor) -> torch.Tensor:
    return torch.floor(x + 0.5)


class FixedModule:
    """The error module of a rule at a :class:`ModuleFormat`: the ``init_state`` / ``step`` of the float module
    (:class:`~eprop_l2l.error_modules.learned.LearnedErrorModule`), which :func:`~.engine.run_rule` calls in its
    place (the arithmetic's ``module``). The parameters passed to :meth:`step` are ignored: the integer weights
    are the exported ones, quantised once."""

    def __init__(self, rule: RuleDescription, weights: dict, module, fmt: ModuleFormat = LOIHI_MODULE):
        self.record = module_record(rule, weights, fmt)
        self.fmt, self.float_module = fmt, module
        spec = module_neurons(rule)
        self.n_ref = int(spec.n_ref)
        self.v_th = float(self.record["v_th_int"])
        exps = self.record["weight_exp"]
        s = float(spec.input_scale)
        v_exp, signal_exp = self.record["v_exp"], self.record["signal_exp"]
        # mantissas, then in units of the membrane (an exact power-of-two shift: e ≥ v_exp)
        self.w = {}
        for name in MODULE_WEIGHTS:
            w = torch.as_tensor(weights[name]).double() * (s if name != "em_proj" else 1.0)
            mantissa = _round(w * 2.0 ** (-exps[name])).clamp(-fmt.weight_max - 1, fmt.weight_max)
            unit = v_exp if name != "em_proj" else signal_exp
            self.w[name] = mantissa * 2.0 ** (exps[name] - unit)
        self.alpha = self.record["alpha_mant"] / 2.0**fmt.decay_bits
        self.decay = self.record["filter_decay_mant"] / 2.0**fmt.decay_bits
        self.signal_unit = 2.0**signal_exp

    @property
    def weights_float(self) -> dict:
        """The quantised weights in float units (W = mantissa·2^e, s folded in)."""
        units = {n: 2.0 ** (self.record["v_exp"] if n != "em_proj" else self.record["signal_exp"])
                 for n in MODULE_WEIGHTS}
        return {n: w * units[n] for n, w in self.w.items()}

    def init_state(self, batch: int, dtype=torch.float32, device=None):
        n_em, n_learner = self.w["em_w_rec"].shape[0], self.w["em_proj"].shape[0]
        zeros = torch.zeros(batch, n_em, dtype=torch.float64, device=device)
        return (zeros, zeros, zeros), torch.zeros(batch, n_learner, dtype=torch.float64, device=device)

    def step(self, params, state, obs):
        (v, z_prev, ref), signal = state
        drive = self.float_module.module_input(obs).double()
        if self.n_ref > 0:
            ref = (ref + self.n_ref * z_prev - 1.0).clamp(0.0, float(self.n_ref))
        v = _round(self.alpha * v) + linear(self.w["em_w_in"], drive) + linear(self.w["em_w_rec"], z_prev)
        v = v - self.v_th * z_prev
        z = (v > self.v_th).double()
        if self.n_ref > 0:
            z = z.masked_fill(ref > 0, 0.0)
        signal = _round(self.decay * signal) + linear(self.w["em_proj"], z)
        out = (signal * self.signal_unit).to(obs.spikes.dtype)
        return ((v, z, ref), signal), out


def attach_fixed_module(arithmetic, rule: RuleDescription, weights: dict, calibration=None, model=None,
                        fmt: ModuleFormat | str = LOIHI_MODULE):
    """``arithmetic`` with the error module run at ``fmt`` in :func:`~.engine.run_rule` (returned for chaining).
    ``calibration`` is unused: the module's exponents depend on its weights only."""
    from .rule import build_model

    if isinstance(fmt, str):
        if fmt not in MODULE_FORMATS:
            raise ConfigError("number_format.error_module", f"{fmt!r} (choose from {', '.join(MODULE_FORMATS)})")
        fmt = MODULE_FORMATS[fmt]
    model = model or build_model(rule)
    arithmetic.module = FixedModule(rule, weights, model.module, fmt)
    return arithmetic
