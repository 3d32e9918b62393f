"""Online e-prop with the per-synapse work in a native loop: the same causal update as the Python loop of
:func:`~.eprop_online.eprop_online`, without its ~30 dispatched tensor operations per step.

The trial runs in blocks of :data:`BLOCK_STEPS` steps. Within a block everything that is per neuron is a few
whole-block tensor operations of the library's own pieces: the cell's native spiking loop (from the state the
previous block ended in), ψ, the readout, the loss's error, the feedback's learning signals, the readout's delta
rule. The per-synapse part — eligibility traces, their κ-filter, the accumulation of L·ē and of e — is one
native call per weight group (``online_traces`` in numerics/native/kernels.cpp), with its state carried from
block to block. Memory: the state O(B·N·N_pre) per weight group and block buffers O(B·BLOCK_STEPS·(N + N_pre)),
whatever the trial's length. This works because the update is accumulated, not applied, during the trial: the
dynamics of a block need only the state the previous block ended in.

It serves what the hardware export and the NEST comparison use: LIF and ALIF learners with broadcast feedback
(:class:`~eprop_l2l.error_modules.feedback.Feedback`) on CPU float32/float64 tensors that autograd does not
record; everything else runs the Python loop (:func:`applies`).
"""

from __future__ import annotations

import torch

from ..cells.alif import ALIF
from ..cells.base import Params
from ..cells.lif import LIF
from ..cells.simulate import simulate_currents
from ..error_modules.base import Observation
from ..error_modules.feedback import Feedback
from ..numerics import native
from ..numerics.filters import causal_filter
from ..numerics.linalg import contract_time, is_per_task

# Steps per block: each block costs ~20 dispatched tensor operations besides the native work, ~0.5 ms; 250 steps
# keep that a few per cent of a 100-neuron trial at batch 1, and the block buffers (B·250·(N + N_pre)) below the
# trace state (B·N·N_pre) from N ≈ 250 on, within a small multiple of it below.
BLOCK_STEPS = 250


def applies(network, params: Params, all_params: Params, source, traces: str, *tensors: torch.Tensor) -> bool:
    """Whether the native loop serves this trial: closed-form traces of a LIF/ALIF cell, broadcast feedback, CPU
    tensors of one float32/float64 dtype, nothing autograd records (the outer loop's gradient through the
    update, and torch.func transforms, take the Python loop)."""
    if traces != "closed_form" or type(network.cell) not in (LIF, ALIF) or not isinstance(source, Feedback):
        return False
    every = [*tensors, *all_params.values()]
    if torch.is_grad_enabled() and any(t.requires_grad for t in every):
        return False
    return len({t.dtype for t in every}) == 1 and native.usable(*every)


def _last(padded):
    """The state a block ended in (the next block's initial state)."""
    return type(padded)(*(f[:, -1] for f in padded))


class _GroupTraces:
    """One weight group's carried state: the presynaptic trace x̄, ē, ALIF's ε_a and ψ^{t−1}, the sums."""

    def __init__(self, cell, params: Params, name: str, batch: int, n_pre: int, dtype, regularised: bool):
        rows = cell.n_rec
        zeros = dict(dtype=dtype)
        self.cell, self.adaptive = cell, isinstance(cell, ALIF)
        self.pre_trace = torch.zeros(batch, n_pre, **zeros)
        self.filtered = torch.zeros(batch, rows, n_pre, **zeros)
        self.eps_a = torch.zeros(batch, rows, n_pre, **zeros) if self.adaptive else None
        self.psi_prev = torch.zeros(batch, rows, **zeros) if self.adaptive else None
        self.beta = cell.beta_vector(self.pre_trace) if self.adaptive else None
        shape = (batch, rows, n_pre) if is_per_task(params[name]) else (rows, n_pre)
        self.acc = torch.zeros(shape, **zeros)
        self.acc_reg = torch.zeros(shape, **zeros) if regularised else None

    def block(self, pre: torch.Tensor, psi: torch.Tensor, signal: torch.Tensor, kappa: float) -> None:
        """Advance over one block: presynaptic signals ``pre [B, C, N_pre]``, ψ and L ``[B, C, N]``."""
        cell = self.cell
        scaled = pre if cell.input_scale == 1.0 else cell.input_scale * pre
        trace = causal_filter(scaled, cell.alpha, initial=self.pre_trace)  # x̄ = F_α(s·pre), the cell's ε_v
        xbar = torch.cat([self.pre_trace.unsqueeze(1), trace], 1)
        self.pre_trace = trace[:, -1]
        rho = cell.rho if self.adaptive else 0.0
        native.module().online_traces(psi, signal, xbar, self.filtered, self.eps_a, self.psi_prev, self.beta,
                                      self.acc, self.acc_reg, kappa, rho)


def native_sums(network, params: Params, all_params: Params, x, target, mask, loss, source, names, plastic,
                kappa: float, regularised: bool):
    """The trial's sums in the order of :class:`~.eprop_online.OnlineSums`: Σ L·ē and Σ e per group, spike
    counts ``[B, N]``, the task loss, the readout's Σ err·F_κ(s·z) and Σ err·F_κ(1)."""
    cell, readout = network.cell, network.readout
    batch, n_steps, dtype = x.shape[0], x.shape[1], x.dtype
    with torch.no_grad():
        n_pre = {"w_in": x.shape[-1], "w_rec": cell.n_rec}
        groups = {n: _GroupTraces(cell, params, n, batch, n_pre[n], dtype, regularised) for n in names}
        state = cell.init_state(batch, dtype=dtype)
        y = readout.init_state(batch, dtype=dtype)
        z_filtered = torch.zeros(batch, cell.n_rec, dtype=dtype)
        one_filtered, value, spike_count = 0.0, 0.0, 0.0
        acc_w_out, acc_b_out = 0.0, 0.0
        out_per_task = "w_out" in params and is_per_task(params["w_out"])
        bias_per_task = readout.bias and is_per_task(params["b_out"], bias=True)
        for start in range(0, n_steps, BLOCK_STEPS):
            steps = slice(start, min(start + BLOCK_STEPS, n_steps))
            x_b, target_b, mask_b = x[:, steps], target[:, steps], mask[:, steps]
            trajectory = simulate_currents(cell, params, cell.input_current(params, x_b), state)
            state = _last(trajectory.padded)
            z = trajectory.outputs
            y_b = readout.run(params, z, y0=y)
            y = y_b[:, -1]
            error = loss.error(y_b, target_b, mask_b)
            value = value + loss.value(y_b, target_b, mask_b)
            obs = Observation(error=error, output=y_b, target=target_b, spikes=z, inputs=x_b)
            signal = source.sequence(all_params, obs)
            psi = cell.psi(params, trajectory.states)
            for name, group in groups.items():
                group.block(x_b if name == "w_in" else trajectory.previous_outputs(), psi, signal, kappa)
            if "w_out" in plastic:
                filtered = causal_filter(readout.input_scale * z, readout.kappa, initial=z_filtered)
                z_filtered = filtered[:, -1]
                acc_w_out = acc_w_out + contract_time(error, filtered, out_per_task)
            if "b_out" in plastic and readout.bias:
                ramp = []
                for _ in range(z.shape[1]):
                    one_filtered = readout.kappa * one_filtered + 1.0  # the bias enters y through F_κ too
                    ramp.append(one_filtered)
                weighted = error * torch.tensor(ramp, dtype=dtype).unsqueeze(-1)
                acc_b_out = acc_b_out + (weighted.sum(1) if bias_per_task else weighted.sum((0, 1)))
            spike_count = spike_count + z.sum(1)
    return ({n: g.acc for n, g in groups.items()}, {n: g.acc_reg for n, g in groups.items()}, spike_count, value,
            acc_w_out, acc_b_out)
