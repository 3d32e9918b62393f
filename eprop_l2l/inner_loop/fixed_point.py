"""Learning-engine arithmetic in PyTorch: number formats, quantisers and the calibration of power-of-two scales.

The arithmetic follows the learning engine of Loihi 2 as Lava's bit-approximate model computes it
(``docs/export.md`` has the derivation):

* weights: an 8-bit signed mantissa with one shared exponent per connection, ``W = w·2^e``; the register that
  learning writes is 9 bits wide (the initial mantissa is stored shifted left by one bit);
* presynaptic traces: unsigned integers of ``trace_bits`` (7), decayed by integer arithmetic
  ``x ← round(α·x) + impulse·pre`` and saturated;
* the third factor y = round(c·ψ·L), a signed ``y_bits`` (8) integer sent by the post-synaptic neuron;
* the tag: every step ``tag ← round(tag + 2^p·x·y)`` (the product keeps ``product_frac_bits`` fractional bits
  before the rounding to an integer), saturated to ``tag_bits`` (9, signed);
* the update, once after the demonstration: ``w ← clip(w + round(2^k·tag))`` in the weight register.

Rounding is ``nearest`` or seeded ``stochastic`` (floor(v + u), u ~ U[0, 1) from a ``torch.Generator``; with
``shared_draw`` one u per step serves every synapse, as in Lava's CPU model). All exponents are integers, so
every scale is exact, and the float update is recovered as ``ΔW = 2^e·Δw``. The scales (:class:`Scales`) are
chosen by :func:`calibrate` from the value ranges of demonstration trials: weights fill the mantissa, traces
and ψ·L fill their integer ranges, the largest tag fills the tag register, and the exponent of the weight
update makes the whole chain equal ``−η Σ_t ψ L x̄``.

Every quantiser passes gradients straight through (``round``) or as the clip's (zero outside the range), so
hardware-aware meta-training (:mod:`.quantized_update`) differentiates through them.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, require_choice, require_count

ROUNDING = ("nearest", "stochastic")


@dataclass(frozen=True)
class FixedFormat:
    weight_bits: int = 8  # signed mantissa of the initial weights
    weight_register_bits: int = 9  # signed register of learned weights (the initial mantissa sits left-shifted)
    trace_bits: int = 7  # unsigned presynaptic trace
    y_bits: int = 8  # signed third factor ψ·L
    tag_bits: int = 9  # signed tag
    product_frac_bits: int = 7  # fractional bits of each step's product before the tag's rounding
    rounding: str = "stochastic"
    shared_draw: bool = True  # stochastic: one draw per step for all synapses (Lava's CPU model)
    # calibration policy: the quantile of the magnitudes that fills each range (1: the largest value; below 1 the
    # few largest values saturate and the bulk gains resolution)
    signal_quantile: float = 1.0
    tag_quantile: float = 1.0
    weight_quantile: float = 1.0  # of the updated weights, which the weight register must hold
    # the third factor over two y registers, y2 + 2^-y_bits·y3 (the engine's sum of products takes both:
    # dt = 2^p·x1·y2 + 2^(p−y_bits)·x1·y3): y2 the value rounded to nearest, y3 its residual in y_bits more bits
    # (emulation only; Lava's fixed-point learner sends one y2 and refuses it)
    y_split: bool = False

    def __post_init__(self):
        for key in ("weight_bits", "trace_bits", "y_bits", "tag_bits"):
            require_count(f"number_format.{key}", getattr(self, key), minimum=2)
        require_count("number_format.product_frac_bits", self.product_frac_bits, minimum=0)
        if self.weight_register_bits < self.weight_bits:
            raise ConfigError("number_format.weight_register_bits",
                              f"must be >= weight_bits={self.weight_bits}, got {self.weight_register_bits}")
        require_choice("number_format.rounding", self.rounding, ROUNDING)
        for key in ("signal_quantile", "tag_quantile", "weight_quantile"):
            value = getattr(self, key)
            if not 0.5 <= value <= 1.0:
                raise ConfigError(f"number_format.{key}", f"must be in [0.5, 1], got {value!r}")

    # integer ranges
    @property
    def weight_max(self) -> int:
        return 2 ** (self.weight_bits - 1) - 1

    @property
    def weight_step(self) -> int:
        """The initial mantissa's LSB in register units (2 on Loihi: 8-bit mantissa in a 9-bit register)."""
        return 2 ** (self.weight_register_bits - self.weight_bits)

    @property
    def register_range(self) -> tuple[int, int]:
        return -(2 ** (self.weight_register_bits - 1)), 2 ** (self.weight_register_bits - 1) - 1

    @property
    def trace_max(self) -> int:
        return 2**self.trace_bits - 1

    @property
    def y_range(self) -> tuple[int, int]:
        return -(2 ** (self.y_bits - 1)), 2 ** (self.y_bits - 1) - 1

    @property
    def tag_range(self) -> tuple[int, int]:
        return -(2 ** (self.tag_bits - 1)), 2 ** (self.tag_bits - 1) - 1

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        if not self.y_split:  # the record as before the split existed
            del record["y_split"]
        return {"kind": "fixed", **record}

    @classmethod
    def from_dict(cls, record: dict) -> FixedFormat:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in record.items() if k in names})


# Loihi 2's learning engine as Lava 0.10 models it (calibrated so that 0.1 % of the tags and of the updated weights
# may saturate: measured on the GPU-trained arm model, this halves the one-shot error of the max-calibrated
# scales); and a format so wide that it must equal float arithmetic
LOIHI = FixedFormat(tag_quantile=0.999, weight_quantile=0.999)
# the same with ψL split over two y registers (y2 + 2^-8·y3): what the engine's sum of products allows beyond one
# 8-bit third factor (hardware.md: the third factor's width is the largest cost of the one-shot error)
LOIHI_SPLIT = dataclasses.replace(LOIHI, y_split=True)
WIDE = FixedFormat(weight_bits=40, weight_register_bits=41, trace_bits=30, y_bits=30, tag_bits=60,
                   product_frac_bits=30, rounding="nearest")
FORMATS = {"loihi": LOIHI, "wide": WIDE}
# the arithmetic an inner update may run in: float, or one of the learning-engine formats above
PRECISIONS = ("float", *FORMATS)


def number_format(name: str, rounding: str | None = None) -> FixedFormat:
    require_choice("precision", name, tuple(FORMATS))
    fmt = FORMATS[name]
    return fmt if rounding is None else dataclasses.replace(fmt, rounding=rounding)


@dataclass(frozen=True)
class Scales:
    """Power-of-two exponents of one model at one format (per plastic connection where it differs)."""

    weight_exp: dict  # W = w·2^e
    trace_exp: dict  # trace impulse 2^i per presynaptic event (the float trace is x̄ = s·F_α(pre))
    y_exp: int  # y = round(−η·s·2^−q · ψL)
    product_exp: dict  # tag += 2^p·x·y
    update_exp: dict  # w += 2^k·tag;  k = q − i − p − e makes 2^e·Δw = −η Σ ψ L x̄
    # an ALIF learner's β·ε_a per synapse (hardware/engine.py) as a tag-wide signed integer d in units of 2^a
    # trace integers; empty for LIF learners (and in the records written before it existed)
    adaptation_exp: dict = dataclasses.field(default_factory=dict)

    def y_scale(self, inner_lr, input_scale: float):
        return inner_lr * input_scale * 2.0 ** (-self.y_exp)

    def to_dict(self) -> dict:
        record = dataclasses.asdict(self)
        if not self.adaptation_exp:  # a LIF learner's record as before
            del record["adaptation_exp"]
        return record

    @classmethod
    def from_dict(cls, record: dict) -> Scales:
        return cls(**{f.name: record[f.name] for f in dataclasses.fields(cls) if f.name in record})


def quantile_abs(values: torch.Tensor, q: float) -> float:
    """The q-quantile of |values| (q = 1: the maximum), the range statistic the calibration fills a format with;
    subsampled with a fixed stride above 2^24 entries (``torch.quantile``'s limit)."""
    flat = values.detach().abs().flatten().double()
    if q >= 1.0:
        return float(flat.max())
    stride = max(1, flat.numel() // 2**24 + 1)
    return float(torch.quantile(flat[::stride], q))


def _floor_log2(value: float) -> int:
    return math.floor(math.log2(value)) if value > 0 else 0


def _ceil_log2_ratio(value: float, top: float) -> int:
    return math.ceil(math.log2(value / top)) if value > 0 else -10**6


def calibrate(fmt: FixedFormat, inner_lr: float, input_scale: float, max_abs_weight: dict, max_abs_weight_after: dict,
              max_pre_trace: dict, max_abs_psi_signal: float, max_abs_tag: dict) -> Scales:
    """Scales from value ranges of demonstration trials (float run): ``max_abs_weight`` / ``_after`` the largest
    |W| before and after the update (the initial mantissa must hold the first, the register the second),
    ``max_pre_trace`` the largest F_α(pre) (without s), ``max_abs_tag`` the largest |Σ_t ψ L x̄| of each
    connection (or the magnitudes that should fill the ranges, if a few larger values may saturate)."""
    weight_exp, trace_exp, product_exp, update_exp = {}, {}, {}, {}
    y_top = fmt.y_range[1]
    # q: the smallest exponent for which |η·s·2^−q·ψL| stays inside the y range
    y_exp = math.ceil(math.log2(inner_lr * input_scale * max_abs_psi_signal / y_top)) if max_abs_psi_signal > 0 else 0
    for name, w_max in max_abs_weight.items():
        e = max(_ceil_log2_ratio(w_max, fmt.weight_max * fmt.weight_step),
                _ceil_log2_ratio(max_abs_weight_after[name], fmt.register_range[1]))
        e = 0 if e == -10**6 else e
        i = _floor_log2(fmt.trace_max / max_pre_trace[name]) if max_pre_trace[name] > 0 else 0
        # the integer tag of the largest synapse, before 2^p: 2^(i−q)·η·max|Σ ψ L x̄|
        tag_unscaled = 2.0 ** (i - y_exp) * inner_lr * max_abs_tag[name]
        p = _floor_log2(fmt.tag_range[1] / tag_unscaled) if tag_unscaled > 0 else 0
        weight_exp[name], trace_exp[name], product_exp[name] = e, i, p
        update_exp[name] = y_exp - i - p - e
    return Scales(weight_exp, trace_exp, y_exp, product_exp, update_exp)


def calibrate_adaptation(fmt: FixedFormat, scales: Scales, input_scale: float, max_abs_held: dict) -> Scales:
    """``scales`` with the exponent a of each connection's β·ε_a register: the largest |β·ε_a| of the float
    run (in units of the float trace x̄ = s·F_α(pre)), as 2^i/s trace integers, fills the tag-wide register."""
    exps = {}
    for name, held in max_abs_held.items():
        top = held * 2.0 ** scales.trace_exp[name] / input_scale
        exps[name] = math.ceil(math.log2(top / fmt.tag_range[1])) if top > 0 else 0
    return dataclasses.replace(scales, adaptation_exp=exps)


def calibrate_run(fmt: FixedFormat, inner_lr: float, input_scale: float, before: dict, after: dict, traces: dict,
                  psi_signal: torch.Tensor, tags: dict) -> Scales:
    """:func:`calibrate` from the tensors of float demonstrations: the weights ``before`` and ``after`` the
    update, the presynaptic traces F_α(pre), ψ·L and the tags Σ_t ψ L x̄ of each plastic connection, reduced with
    the format's calibration quantiles. The fidelity report and hardware-aware meta-training both call it."""
    names = tuple(before)
    return calibrate(fmt, inner_lr, input_scale,
                     {n: float(torch.as_tensor(before[n]).detach().abs().max()) for n in names},
                     {n: quantile_abs(after[n], fmt.weight_quantile) for n in names},
                     {n: float(traces[n].detach().max()) for n in names},
                     quantile_abs(psi_signal, fmt.signal_quantile),
                     {n: quantile_abs(tags[n], fmt.tag_quantile) for n in names})


# --- quantisers (straight-through) ---------------------------------------------------------------------------
def _draw(like: torch.Tensor, generator, shared: bool) -> torch.Tensor:
    """u ~ U[0, 1) of the shape of ``like`` (one for all entries where ``shared``); ``generator`` may be one
    generator per movement (a sequence as long as ``like``'s first, batch dimension): each movement then draws
    from its own stream (one draw per step where ``shared``, as one Lava process per task), so that the draws,
    hence the results, do not depend on how the movements are batched."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != like.shape[0]:
            raise ValueError(f"round_integer: {len(generator)} generators for a batch of {like.shape[0]}")
        shape = (1,) * (like.dim() - 1) if shared else like.shape[1:]
        return torch.stack([torch.rand(shape, generator=g, dtype=like.dtype, device=like.device) for g in generator])
    shape = () if shared else like.shape
    return torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)


def movement_generators(seed: int, tasks: range) -> list[torch.Generator]:
    """One rounding stream per movement (its index in the evaluated set), independent of the batching."""
    return [torch.Generator().manual_seed(seed * 1_000_003 + int(k)) for k in tasks]


def round_integer(x: torch.Tensor, rounding: str = "nearest", generator=None,
                  shared: bool = False) -> torch.Tensor:
    """Round to integers (nearest, or floor(x + u) stochastic); the gradient passes straight through."""
    if rounding == "nearest":
        rounded = torch.round(x)
    else:
        rounded = torch.floor(x + _draw(x.detach(), generator, shared))
    return x + (rounded - x).detach()


def saturate(x: torch.Tensor, low: int, high: int) -> torch.Tensor:
    return x.clamp(low, high)


def quantize_weights(w: torch.Tensor, fmt: FixedFormat, exp: int) -> torch.Tensor:
    """Initial weights → register integers (the mantissa's rounding to nearest, shifted into the register)."""
    mantissa = round_integer(w * 2.0 ** (-exp) / fmt.weight_step)
    return saturate(mantissa, -fmt.weight_max - 1, fmt.weight_max) * fmt.weight_step
