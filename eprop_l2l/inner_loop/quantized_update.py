"""The one-shot update at learning-engine precision, differentiable, for hardware-aware meta-training
(``inner.precision=loihi``).

Given a demonstration recorded by the fused e-prop execution (trajectory and learning signals), the update is
computed as the learning engine computes it (:mod:`.fixed_point`): ψ·L quantised to the third factor's
integers, the presynaptic traces to the trace integers, their product summed over the trial into the tag
(saturated), the tag shifted into the weight register (saturated) on top of the quantised initial weights.
Every rounding passes gradients straight through, every saturation passes them inside its range, so the outer
loop learns an error module (and initial weights, and the inner learning rate) that work at this precision.

Two simplifications against :mod:`.engine`, both stated in ``docs/export.md``: the per-step rounding of the
tag and of the trace decay is replaced by its expectation (the exact integer sum of the quantised factors is one
matrix product over time, as in the fused execution), and the demonstration runs with float weights (the
scales, which depend on the demonstration's value ranges, are calibrated on it, detached, per batch).
"""

from __future__ import annotations

import torch

from ..cells.base import mask_self_connections
from ..numerics.filters import causal_filter
from ..numerics.linalg import contract_time, is_per_task
from .eprop import presynaptic
from .fixed_point import FixedFormat, calibrate_run, quantize_weights, round_integer, saturate


def quantized_fast_weights(cell, fast: dict, result, x: torch.Tensor, plastic: tuple[str, ...], inner_lr,
                           fmt: FixedFormat) -> dict:
    """Fast weights after one update at ``fmt``'s precision (``result``: the fused demonstration of ``fast``)."""
    spec = cell.spec
    trajectory = result.trajectory
    psi_signal = cell.psi(fast, trajectory.states) * result.signals
    inner_lr_value = float(inner_lr.detach()) if isinstance(inner_lr, torch.Tensor) else float(inner_lr)
    traces, tags = {}, {}
    for name in plastic:
        traces[name] = causal_filter(presynaptic(name, trajectory, x), spec.alpha)
        tags[name] = contract_time(psi_signal, spec.input_scale * traces[name], is_per_task(fast[name]))
    after = {n: fast[n].detach() - inner_lr_value * tags[n].detach() for n in plastic}
    scales = calibrate_run(fmt, inner_lr_value, spec.input_scale, {n: fast[n] for n in plastic}, after, traces,
                           psi_signal, tags)
    y = saturate(round_integer(-scales.y_scale(inner_lr, spec.input_scale) * psi_signal), *fmt.y_range)
    new = dict(fast)
    for name in plastic:
        x1 = saturate(round_integer(2.0 ** scales.trace_exp[name] * traces[name]), 0, fmt.trace_max)
        tag = contract_time(y, x1, is_per_task(fast[name])) * 2.0 ** scales.product_exp[name]
        tag = saturate(round_integer(tag), *fmt.tag_range)
        tag = mask_self_connections(cell, name, tag)
        exp = scales.weight_exp[name]
        w = quantize_weights(fast[name], fmt, exp)
        step = round_integer(tag * 2.0 ** scales.update_exp[name])
        new[name] = saturate(w + step, *fmt.register_range) * 2.0**exp
    return new
