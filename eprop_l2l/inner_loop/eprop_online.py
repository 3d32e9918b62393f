"""e-prop, online execution: causal, one step at a time, memory independent of the trial length.

This is the semantics a neuromorphic learning engine implements and the reference for hardware export: per
step the cell advances, each plastic synapse updates its eligibility trace e_ji^t and its κ-filtered trace
ē_ji^t, and accumulates L_j^t ē_ji^t. The rate regulariser needs the trial's mean rate, so its part
Σ_t e_ji^t is accumulated separately and scaled once the trial ends. State: O(B·rows·n_pre) per weight group.

``traces="closed_form"`` uses the cell's hand-written ``trace_step``; ``traces="autodiff"`` derives the same
traces from ``cell.step`` by forward-mode autodiff (:class:`eprop_l2l.cells.autodiff.AutodiffTraces`), which
works for any cell. Tests hold both, and the fused execution, equal.
"""

from __future__ import annotations

from typing import NamedTuple

import torch

from ..cells.autodiff import AutodiffTraces
from ..cells.base import Params, check_params, expand_rows, mask_self_connections
from ..error_modules.base import Observation, for_readout
from ..errors import require_choice
from ..numerics.linalg import is_per_task, outer
from .eprop import EpropOptions, EpropResult
from .eprop_online_native import applies, native_sums
from .losses import Loss


class OnlineSums(NamedTuple):
    """What the trial accumulates: all the update needs once the trial has ended."""

    acc: dict[str, torch.Tensor]  # Σ_t L^t ē^t per recurrent weight group
    acc_reg: dict[str, torch.Tensor | None]  # Σ_t e^t per group (the rate regulariser's part; None without it)
    spike_count: torch.Tensor  # Σ_t z^t  [B, n_rec]
    value: torch.Tensor  # the task loss
    acc_w_out: torch.Tensor | float  # Σ_t err^t F_κ(s·z)^t
    acc_b_out: torch.Tensor | float  # Σ_t err^t F_κ(1)^t


def eprop_online(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                 source, *, traces: str = "closed_form", **keywords) -> EpropResult:
    """The trial, the source and the options (:class:`~.eprop.EpropOptions`) of :func:`~.eprop.eprop_fused`,
    and its result without trajectory and signals. LIF/ALIF learners with broadcast feedback on CPU run the
    per-synapse work in a native loop (:mod:`.eprop_online_native`) where autograd does not record the trial;
    the Python loop here is the reference and serves everything else."""
    require_choice("traces", traces, ("closed_form", "autodiff"))
    options = EpropOptions(**keywords)
    cell, readout = network.cell, network.readout
    check_params(cell, params)
    kappa = options.trace_filter(readout)
    source = for_readout(source, readout)
    all_params = options.source_view(params)
    names = options.recurrent_plastic()
    if applies(network, params, all_params, source, traces, x, target, mask):
        sums = OnlineSums(*native_sums(network, params, all_params, x, target, mask, loss, source, names,
                                       options.plastic, kappa, options.regularizer is not None))
    else:
        sums = _python_sums(network, params, all_params, x, target, mask, loss, source, traces, options, kappa)
    return _update(cell, readout, params, options, sums, x.shape[0], x.shape[1])


def _python_sums(network, params, all_params, x, target, mask, loss, source, traces, options, kappa) -> OnlineSums:
    regularizer, plastic, context = options.regularizer, options.plastic, options.context
    cell, readout = network.cell, network.readout
    batch, n_steps = x.shape[0], x.shape[1]
    state = cell.init_state(batch, dtype=x.dtype, device=x.device)
    y = readout.init_state(batch, dtype=x.dtype, device=x.device)
    source_state = source.init_state(batch, x.dtype, x.device)
    names = options.recurrent_plastic()
    autodiff = AutodiffTraces(cell, names) if traces == "autodiff" else None
    n_pre = {"w_in": x.shape[-1], "w_rec": cell.n_rec, "bias": 1}
    trace = autodiff.init(params, state) if autodiff else {n: cell.trace_init(params, state, n_pre[n]) for n in names}
    filtered = {n: 0.0 for n in names}
    acc = {n: 0.0 for n in names}
    acc_reg = {n: 0.0 if regularizer is not None else None for n in names}
    z_filtered, one_filtered, acc_w_out, acc_b_out, spike_count, value = 0.0, 0.0, 0.0, 0.0, 0.0, 0.0

    def accumulate(total, increment, per_task):
        return total + (increment if per_task else increment.sum(0))

    for t in range(n_steps):
        prev = state
        if autodiff:
            state, z, trace, elig = autodiff.step(params, prev, trace, x[:, t])
        else:
            state, z = cell.step(params, prev, x[:, t])
            elig = {}
            for name in names:
                pre = {"w_in": x[:, t], "w_rec": cell.output(prev), "bias": torch.ones_like(x[:, t, :1])}[name]
                trace[name], elig[name] = cell.trace_step(params, trace[name], prev, state, pre)
        y = readout.step(params, y, z)
        error = loss.error(y, target[:, t], mask[:, t])
        value = value + loss.value(y, target[:, t], mask[:, t])
        context_t = None if context is None else context[:, t]
        obs = Observation(error=error, output=y, target=target[:, t], spikes=z, inputs=x[:, t], context=context_t)
        source_state, signal = source.step(all_params, source_state, obs)
        signal_rows = expand_rows(cell, signal).unsqueeze(-1)
        for name in names:
            per_task = is_per_task(params[name], bias=name == "bias")
            filtered[name] = kappa * filtered[name] + elig[name]
            acc[name] = accumulate(acc[name], signal_rows * filtered[name], per_task)
            if regularizer is not None:
                acc_reg[name] = accumulate(acc_reg[name], elig[name], per_task)
        z_filtered = readout.kappa * z_filtered + readout.input_scale * z
        if "w_out" in plastic:
            acc_w_out = accumulate(acc_w_out, outer(error, z_filtered), is_per_task(params["w_out"]))
        if "b_out" in plastic and readout.bias:
            one_filtered = readout.kappa * one_filtered + 1.0  # the bias enters y through F_κ too
            acc_b_out = accumulate(acc_b_out, one_filtered * error, is_per_task(params["b_out"], bias=True))
        spike_count = spike_count + z

    return OnlineSums(acc, acc_reg, spike_count, value, acc_w_out, acc_b_out)


def _update(cell, readout, params: Params, options: EpropOptions, sums: OnlineSums, batch: int,
            n_steps: int) -> EpropResult:
    """The update from the trial's sums: the rate regulariser's signal scales Σ e once the mean rate is known."""
    regularizer, plastic = options.regularizer, options.plastic
    value = sums.value
    grads = {}
    per_task_rec = is_per_task(params["w_rec"])
    if regularizer is not None:
        rates = sums.spike_count / n_steps if per_task_rec else sums.spike_count.sum(0) / (n_steps * batch)
        value = value + regularizer.loss_from_rate(rates)
        n_samples = n_steps * (1 if per_task_rec else batch)
        reg_rows = expand_rows(cell, regularizer.signal_from_rate(rates, n_samples)).unsqueeze(-1)
    for name in options.recurrent_plastic():
        grad = sums.acc[name] + (reg_rows * sums.acc_reg[name] if regularizer is not None else 0.0)
        grads[name] = mask_self_connections(cell, name, grad.squeeze(-1) if name == "bias" else grad)
    if "w_out" in plastic:
        grads["w_out"] = sums.acc_w_out
    if "b_out" in plastic and readout.bias:
        grads["b_out"] = sums.acc_b_out
    return EpropResult(grads, value, None, None, None)
