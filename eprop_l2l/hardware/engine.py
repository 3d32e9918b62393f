"""A loaded rule description, executed step by step as a learning engine executes it.

Per step t of a demonstration: the learning network advances (its cell's own ``step``, rebuilt from the
exported spec), the error module advances and emits L^t (e-prop 1: the readout advances, and its output error
against the target, mask·(y^t − y*^t), is projected by the feedback matrix B), the post-synaptic neuron forms
its third factor from ψ_j^t·L_j^t, every plastic connection updates its presynaptic trace from the signal the
rule names (x^t or z^{t-1}) and adds the product of trace and third factor to its tag. After the last step the
tag is applied once. What the arithmetic of each of these operations is — float, or a learning engine's
integers — is the ``arithmetic`` object's business (:class:`FloatArithmetic`, :class:`FixedArithmetic`); the
order of the operations is the rule's and lives only here.

An ALIF learner (the description's ``adaptation``) holds, per synapse, h_ji = β_j·ε_a,ji (``cells/alif.py``),
what a learning engine keeps in its second per-synapse variable: the tag adds ψL·(x̄ − h) and then
h ← β_j ψ_j^t·x̄_i^t + (ρ − β_j ψ_j^t)·h, both from the values of step t (the engine updates its synaptic variables
together, from their values before the step).

With float arithmetic the tags equal ``eprop_online``'s estimate Σ_t ψ_j L_j e_ji of the same model (tested).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..error_modules.base import Observation
from ..inner_loop.fixed_point import FixedFormat, Scales, quantize_weights, round_integer, saturate
from ..inner_loop.losses import Loss
from ..meta.params import ERROR_MODULE, NETWORK, nested, tree_map
from ..numerics.linalg import no_self_mask, outer
from .rule import RuleDescription, build_model, learner_neurons


class FloatArithmetic:
    """The rule in float: tag = Σ_t ψL x̄ (e-prop's dE/dW estimate), W ← W − η·tag."""

    def __init__(self, rule: RuleDescription, inner_lr: float | None = None):
        self.inner_lr = rule.inner_lr if inner_lr is None else inner_lr
        self.trace = {c.weights: c.trace for c in rule.plastic}

    def weights(self, name: str, w: torch.Tensor) -> torch.Tensor:
        return w

    def trace_step(self, name: str, trace: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        return self.trace[name].decay * trace + self.trace[name].impulse * pre

    def third_factor(self, psi_signal: torch.Tensor) -> torch.Tensor:
        return psi_signal

    def accumulate(self, name: str, tag, trace: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return tag + _times(y, trace)

    def eligible(self, name: str, trace: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """An ALIF synapse's eligible trace x̄ − β·ε_a."""
        return trace.unsqueeze(-2) - held

    def adaptation_step(self, name: str, held, trace: torch.Tensor, beta_psi: torch.Tensor, rho: float):
        """β·ε_a of the next step from this step's ψ and trace."""
        return outer(beta_psi, trace) + (rho - beta_psi).unsqueeze(-1) * held

    def gradient(self, name: str, tag: torch.Tensor) -> torch.Tensor:
        """The tag in units of Σ_t ψ L x̄."""
        return tag

    def apply(self, name: str, w: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        return w - self.inner_lr * tag


class FixedArithmetic:
    """The rule in a learning engine's integers (:mod:`eprop_l2l.inner_loop.fixed_point`); values are held as
    integer-valued float64 tensors, weights handed to the dynamics as their exact float values ``w·2^e``."""

    def __init__(self, rule: RuleDescription, fmt: FixedFormat, scales: Scales, generator: torch.Generator):
        self.fmt, self.scales, self.generator = fmt, scales, generator
        self.inner_lr = rule.inner_lr
        self.decay = {c.weights: c.trace.decay for c in rule.plastic}
        self.y_scale = scales.y_scale(rule.inner_lr, learner_neurons(rule).input_scale)

    def _round(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        return round_integer(x, self.fmt.rounding, self.generator, shared)

    def weights(self, name: str, w: torch.Tensor) -> torch.Tensor:
        exp = self.scales.weight_exp[name]
        return quantize_weights(w.double(), self.fmt, exp) * 2.0**exp

    def trace_step(self, name: str, trace: torch.Tensor, pre: torch.Tensor) -> torch.Tensor:
        decayed = self._round(self.decay[name] * trace, shared=False)
        return saturate(decayed + 2.0 ** self.scales.trace_exp[name] * pre.double(), 0, self.fmt.trace_max)

    def third_factor(self, psi_signal: torch.Tensor) -> torch.Tensor:
        # the sign is folded in so that the tag accumulates the weight change, as the engine adds
        value = -self.y_scale * psi_signal.double()
        if not self.fmt.y_split:
            return saturate(self._round(value, shared=False), *self.fmt.y_range)
        # y2 + 2^-b·y3: y2 rounded to nearest (saturated), the residual rounded in y3's b more bits
        y2 = saturate(torch.round(value), *self.fmt.y_range)
        unit = 2.0**self.fmt.y_bits
        y3 = saturate(self._round((value - y2) * unit, shared=False), *self.fmt.y_range)
        return y2 + y3 / unit

    def accumulate(self, name: str, tag, trace: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        frac = 2.0**self.fmt.product_frac_bits
        product = torch.floor(_times(y, trace) * (2.0 ** self.scales.product_exp[name] * frac)) / frac
        return saturate(self._round(tag + product, self.fmt.shared_draw), *self.fmt.tag_range)

    def eligible(self, name: str, trace: torch.Tensor, held: torch.Tensor) -> torch.Tensor:
        """The trace integer minus the register d = β·ε_a in units of 2^a trace integers."""
        return trace.unsqueeze(-2) - 2.0 ** self.scales.adaptation_exp[name] * held

    def adaptation_step(self, name: str, held, trace: torch.Tensor, beta_psi: torch.Tensor, rho: float):
        """d ← round(βψ·x·2^−a + (ρ − βψ)·d), saturated to the tag's width (the engine's d is as wide as its
        tag). βψ and ρ − βψ enter at float precision: their factor widths are not emulated."""
        step = outer(beta_psi, trace) * 2.0 ** (-self.scales.adaptation_exp[name])
        held = step + (rho - beta_psi).unsqueeze(-1) * held
        return saturate(self._round(held, self.fmt.shared_draw), *self.fmt.tag_range)

    def gradient(self, name: str, tag: torch.Tensor) -> torch.Tensor:
        """The tag in units of Σ_t ψ L x̄ (−ΔW/η before the weight register's rounding)."""
        s = self.scales
        return -tag * 2.0 ** (s.update_exp[name] + s.weight_exp[name]) / self.inner_lr

    def apply(self, name: str, w: torch.Tensor, tag: torch.Tensor) -> torch.Tensor:
        exp = self.scales.weight_exp[name]
        step = self._round(tag * 2.0 ** self.scales.update_exp[name], self.fmt.shared_draw)
        return saturate(w * 2.0 ** (-exp) + step, *self.fmt.register_range) * 2.0**exp


def _times(y: torch.Tensor, trace: torch.Tensor) -> torch.Tensor:
    """y_j times a presynaptic trace x_i ``[B, n]`` (outer product) or an ALIF synapse's ``[B, rows, n]``."""
    return outer(y, trace) if trace.dim() == y.dim() else y.unsqueeze(-1) * trace


@dataclass
class EngineResult:
    initial: dict  # plastic weights as the dynamics used them in the first demonstration [B, rows, n]
    weights: dict  # plastic weights after the last update [B, rows, n]
    tags: dict  # the last demonstration's tags in units of Σ_t ψ L x̄ [B, rows, n]
    raw_tags: dict  # the same as the arithmetic holds them (integers for fixed point)
    spikes: torch.Tensor  # z of the last demonstration [B, T, N]
    psi: torch.Tensor  # ψ [B, T, N]
    signals: torch.Tensor  # L [B, T, N]
    held_max: dict  # ALIF: the largest |β·ε_a| per connection as the arithmetic holds it (empty for LIF)


def run_rule(rule: RuleDescription, weights: dict, x: torch.Tensor, context: torch.Tensor | None, arithmetic,
             model=None, target: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> EngineResult:
    """Demonstration(s) → update(s) for a batch of tasks ``x [B, T, n_in]``, ``context [B, T, n_ctx]``; an e-prop 1
    rule also takes the demonstration's target ``[B, T, n_out]`` and mask ``[B, T]``."""
    model = model or build_model(rule)
    cell = model.cell
    # the arithmetic may run the error module itself (hardware/fixed_module.py: the module at a chip's precision)
    module = getattr(arithmetic, "module", None) or model.module
    dtype = x.dtype
    tensor = {k: torch.as_tensor(v) for k, v in weights.items()}
    tree = nested(tensor)
    module_params = tree_map(lambda v: v.to(dtype), tree.get(ERROR_MODULE, {}))
    if rule.is_feedback:  # B is b_fb, or the readout's own w_out (symmetric)
        if target is None or mask is None:
            raise ValueError("run_rule: an e-prop 1 rule projects the output error: pass target and mask")
        readout_params = {k: v.to(dtype) for k, v in tree[NETWORK].items()}
        module_params = {**readout_params, **module_params}
        loss = Loss("mse")  # the motor error mask·(y − y*), the one FeedbackSignal.error names
    batch, steps = x.shape[0], x.shape[1]
    names = rule.plastic_names
    plastic = {n: arithmetic.weights(n, tensor[n].to(dtype).expand(batch, *tensor[n].shape)) for n in names}
    initial = dict(plastic)
    adaptive = rule.adaptation is not None
    held_max = {}
    for _ in range(rule.n_updates):
        params = {**{k: tensor[k].to(dtype) for k in ("w_in", "w_rec")}, **{n: w.to(dtype) for n, w in plastic.items()}}
        state = cell.init_state(batch, dtype=dtype, device=x.device)
        module_state = module.init_state(batch, dtype, x.device)
        output = model.readout.init_state(batch, dtype=dtype, device=x.device) if rule.is_feedback else None
        traces = {n: None for n in names}
        held = {n: 0.0 for n in names}  # β·ε_a (ALIF)
        tags = {n: 0.0 for n in names}
        record = {"spikes": [], "psi": [], "signals": []}
        for t in range(steps):
            prev = state
            state, z = cell.step(params, prev, x[:, t])
            psi = cell.psi(params, state)
            ctx = None if context is None else context[:, t]
            if rule.is_feedback:
                output = model.readout.step(readout_params, output, z)
                obs = Observation(error=loss.error(output, target[:, t], mask[:, t]))
            else:
                obs = Observation(spikes=z, inputs=x[:, t], context=ctx)
            module_state, signal = module.step(module_params, module_state, obs)
            y = arithmetic.third_factor(psi * signal)
            for conn in rule.plastic:
                name = conn.weights
                pre = x[:, t] if conn.pre == "input" else cell.output(prev)
                if traces[name] is None:
                    traces[name] = torch.zeros_like(y[..., :1].expand(*y.shape[:-1], pre.shape[-1]))
                traces[name] = arithmetic.trace_step(name, traces[name], pre)
                if not adaptive:
                    tags[name] = arithmetic.accumulate(name, tags[name], traces[name], y)
                    continue
                eligible = arithmetic.eligible(name, traces[name], held[name])
                tags[name] = arithmetic.accumulate(name, tags[name], eligible, y)
                held[name] = arithmetic.adaptation_step(name, held[name], traces[name], cell.beta_vector(psi) * psi,
                                                        cell.rho)
                largest = float(held[name].abs().max())
                held_max[name] = max(held_max.get(name, 0.0), largest)
            for key, value in (("spikes", z), ("psi", psi), ("signals", signal)):
                record[key].append(value)
        for conn in rule.plastic:
            if not conn.diagonal_plastic:  # self-connections are never learned
                name = conn.weights
                tags[name] = tags[name] * no_self_mask(tags[name].shape[-1], tags[name].dtype, tags[name].device)
        plastic = {n: arithmetic.apply(n, plastic[n], tags[n]) for n in names}
    grads = {n: arithmetic.gradient(n, tags[n]) for n in names}
    stacked = {k: torch.stack(v, 1) for k, v in record.items()}
    return EngineResult(initial, plastic, grads, tags, stacked["spikes"], stacked["psi"], stacked["signals"],
                        held_max)


def adapted_trial(rule: RuleDescription, weights: dict, plastic: dict, x: torch.Tensor, model=None) -> tuple:
    """The test trial of the adapted network: ``(trajectory, y)`` with the plastic weights replaced."""
    from ..cells.network import RecurrentNetwork

    model = model or build_model(rule)
    params = {k: torch.as_tensor(v).to(x.dtype) for k, v in nested(weights)[NETWORK].items()}
    params.update({n: w.to(x.dtype) for n, w in plastic.items()})
    return RecurrentNetwork(model.cell, model.readout).run(params, x)
