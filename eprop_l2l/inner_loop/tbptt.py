"""Truncated BPTT over windows of ``k`` steps, with a gradient supplied at every window boundary — the engine
of e-prop 3 (:mod:`.eprop3`) and of truncated BPTT with synthetic gradients (Jaderberg et al. 2017).

Conventions (0-based steps; "after b steps" is the boundary b):

* The network state after b steps is ``S^b = (s^b, y^b)``: the cell's state record and the readout. Only the
  fields of ``s`` through which the next steps depend on the past carry gradient (:class:`StateLayout` finds
  them with autograd: LIF ``v, z``; ALIF ``v, a, z``; LSTM ``c, h``; rate ``h, r``; never the refractory
  counter or the LSTM gate records). ``flatten`` packs them, and ``y``, into one ``[B, n]`` vector.
* Windows are ``[a, b)`` with ``a = 0, k, 2k, ...`` and ``b = min(a + k, T)``. Within a window the step is the
  cell's ``step`` with all gradient paths (``paths="full"``), and the window's objective is

      J_m = Σ_{t ∈ [a, b)} E^t  +  ⟨c^b, flatten(S^b)⟩            (c^b given, no gradient; c^T = 0)

  where ``E^t`` is the task loss at step t plus the rate regulariser's linear term ``R·z^t`` (R the
  regulariser's signal of the trial, as in e-prop; its gradient is exactly the regulariser's).
* ``c^b = boundary(b, flatten(S^b))`` is what the future contributes: ∂E_{≥b}/∂S^b through the steps after b
  (the *external* gradient of the boundary state). :func:`true_boundary_grads` computes it exactly by BPTT over
  the whole trial; a synthetic-gradient module predicts it (:mod:`eprop_l2l.error_modules.synthetic_gradient`);
  ``None`` (or zeros) is plain truncated BPTT.
* One ``torch.autograd.grad`` per window gives: the window's weight gradient (uses of the weights in the window),
  ``∂J_m/∂S^a`` — the same external gradient at the window's *start*, the bootstrapped target of the synthetic
  gradient at boundary a — and, with ``split=True``, the learning signals of e-prop 3:

      L^t = ∂J/∂z^t through the paths that the e-prop eligibility trace leaves out
          = (readout and regulariser at step t)  +  (the non-local hop into step t+1, then every path)

  The non-local hop is read off with autograd alone: step t+1 is evaluated as
  ``F_local(s) + F_full(s + p) − F_local(s + p)`` with a zero probe ``p`` on the cell's output field (same
  values; ∂/∂s is the full Jacobian, ∂/∂p the full minus the local one), and the readout reads ``z^t + q``
  with a second zero probe q. The hop of the window's last step lies in the next window (its first step) and
  is read there, so every L^t is exact when every c^b is.

With k ≥ T (one window) the weight gradient is the full BPTT gradient; with c^b the true external gradient it
is too, for any k (Jaderberg's consistency); both are tested to 1e-10 in ``tests/test_eprop3.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from ..cells.base import Params, check_params, mask_self_connections, stack_states
from ..cells.simulate import Trajectory, simulate
from ..cells.state_layout import StateLayout
from ..errors import ConfigError, require_count
from ..numerics.linalg import is_per_task
from .eprop import DEFAULT_PLASTIC, READOUT_WEIGHTS
from .losses import Loss
from .regularization import RateRegularizer

Boundary = Callable[[int, torch.Tensor], torch.Tensor | None]


class TruncatedResult(NamedTuple):
    grads: dict[str, torch.Tensor]  # weight gradients (tBPTT) or, with split, readout gradients only
    loss: torch.Tensor  # task loss + rate regulariser of the trial
    outputs: torch.Tensor  # readout y [B, T, n_out]
    trajectory: Trajectory  # the recorded trial (detached)
    signals: torch.Tensor | None  # learning signals L [B, T, n_rec] (split only)
    boundary_steps: tuple[int, ...]  # the inner boundaries b = k, 2k, ... < T
    boundary_states: list[torch.Tensor]  # flatten(S^b) per inner boundary, detached [B, n]
    boundary_used: list[torch.Tensor]  # the c^b each window ended with (zeros where none was given) [B, n]
    boundary_targets: list[torch.Tensor]  # ∂J_m/∂S^b computed by the window that starts at b [B, n]


def _check_k(k: int) -> None:
    require_count("tbptt.k", k)


def run_windows(network, params: Params, x: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss: Loss,
                k: int, boundary: Boundary | None = None, regularizer: RateRegularizer | None = None,
                plastic: tuple[str, ...] = DEFAULT_PLASTIC, split: bool = False) -> TruncatedResult:
    """Truncated BPTT over windows of ``k`` steps (see the module docstring). ``split`` also returns the
    e-prop 3 learning signals (and computes no recurrent-weight gradients: e-prop 3 takes those from the
    traces)."""
    _check_k(k)
    cell, readout = network.cell, network.readout
    check_params(cell, params)
    if x.shape[-1] != cell.n_in:
        raise ConfigError("inputs", f"expected {cell.n_in} input channels, got {x.shape[-1]}")
    layout = StateLayout(cell, readout)
    batch, n_steps = x.shape[0], x.shape[1]
    dtype, device = x.dtype, x.device
    with torch.enable_grad():
        names = [n for n in plastic if n in params and not (split and n not in READOUT_WEIGHTS)]
        leaves = {n: params[n].detach().requires_grad_() for n in names}
        p = {**{n: v.detach() for n, v in params.items()}, **leaves}
        per_task = is_per_task(params["w_rec"])
        reg_signal, reg_value = None, 0.0
        if regularizer is not None:
            with torch.no_grad():
                z_all = simulate(cell, params, x).outputs
            reg_signal = regularizer.signal(z_all, per_task)[:, 0]  # [B or 1, N], constant in time
            reg_value = regularizer.loss(z_all, per_task)

        state = cell.init_state(batch, dtype=dtype, device=device)
        y = readout.init_state(batch, dtype=dtype, device=device)
        states, ys = [state], []
        grads = {n: torch.zeros_like(v) for n, v in leaves.items()}
        direct = torch.zeros(batch, n_steps, cell.n_rec, dtype=dtype, device=device) if split else None
        hop = torch.zeros_like(direct) if split else None
        steps, b_states, b_used, b_targets = [], [], [], []
        for a in range(0, n_steps, k):
            b = min(a + k, n_steps)
            start, y_start = layout.leaves(state, y)
            current, yc = start, y_start
            hop_probes, direct_probes, objective = [], [], 0.0
            for t in range(a, b):
                i_in = cell.input_current(p, x[:, t])
                if split and t > 0:
                    probe = torch.zeros_like(current[layout.output_index]).requires_grad_()
                    shifted = layout.with_output(current, current[layout.output_index] + probe)
                    full = cell.step_current(p, shifted, i_in, "full")[0]
                    local_shifted = cell.step_current(p, shifted, i_in, "local")[0]
                    local = cell.step_current(p, current, i_in, "local")[0]
                    fields = list(full)
                    for i in layout.fields:
                        fields[i] = local[i] + (full[i] - local_shifted[i])
                    current = type(full)(*fields)
                    hop_probes.append((t - 1, probe))
                else:
                    current = cell.step_current(p, current, i_in, "full")[0]
                out = cell.output(current)
                if split:
                    q = torch.zeros_like(out).requires_grad_()
                    direct_probes.append((t, q))
                    out = out + q
                yc = readout.step(p, yc, out)
                step_loss = loss.value(yc, target[:, t], mask[:, t])
                if reg_signal is not None:
                    step_loss = step_loss + (reg_signal * out).sum()
                objective = objective + step_loss
                ys.append(yc.detach())
                states.append(type(current)(*(f.detach() for f in current)))
            if b < n_steps:
                end_flat = layout.flatten(current, yc)
                used = boundary(b, end_flat.detach()) if boundary is not None else None
                if used is None:
                    used = torch.zeros_like(end_flat)
                objective = objective + (used.detach() * end_flat).sum()
                steps.append(b)
                b_states.append(end_flat.detach())
                b_used.append(used.detach())
            inputs = list(leaves.values())
            start_fields = [start[i] for i in layout.fields] + [y_start] if a > 0 else []
            inputs += start_fields
            inputs += [pr for _, pr in hop_probes] + [q for _, q in direct_probes]
            out_grads = torch.autograd.grad(objective, inputs, allow_unused=True)
            out_grads = [torch.zeros_like(i) if g is None else g for i, g in zip(inputs, out_grads, strict=True)]
            n_w = len(leaves)
            for name, g in zip(leaves, out_grads[:n_w], strict=True):
                grads[name] = grads[name] + g
            rest = out_grads[n_w:]
            if a > 0:
                n_s = len(start_fields)
                b_targets.append(torch.cat(rest[:n_s], -1).detach())
                rest = rest[n_s:]
            if split:
                n_h = len(hop_probes)
                for (t, _), g in zip(hop_probes, rest[:n_h], strict=True):
                    hop[:, t] = g
                for (t, _), g in zip(direct_probes, rest[n_h:], strict=True):
                    direct[:, t] = g
            state = type(current)(*(f.detach() for f in current))
            y = yc.detach()

    outputs = torch.stack(ys, 1)
    value = loss.value(outputs, target, mask) + reg_value
    padded = stack_states(states)
    trajectory = Trajectory(padded, cell.output(padded))
    grads = {n: mask_self_connections(cell, n, g) for n, g in grads.items()}
    signals = direct + hop if split else None
    return TruncatedResult(grads, value, outputs, trajectory, signals, tuple(steps), b_states, b_used, b_targets)


def tbptt_grads(network, params: Params, x, target, mask, loss: Loss, k: int, boundary: Boundary | None = None,
                regularizer: RateRegularizer | None = None,
                plastic: tuple[str, ...] = DEFAULT_PLASTIC) -> TruncatedResult:
    """Truncated BPTT (window ``k``) with ``boundary`` gradients: ``boundary=None`` is plain truncation,
    :func:`true_boundary_grads` makes it exact, a synthetic-gradient module makes it Jaderberg et al.'s DNI."""
    return run_windows(network, params, x, target, mask, loss, k, boundary, regularizer, plastic, split=False)


# -------------------------------------------------------------------------------------- the exact boundary term
def true_boundary_grads(network, params: Params, x, target, mask, loss: Loss, boundaries,
                        regularizer: RateRegularizer | None = None) -> dict[int, torch.Tensor]:
    """∂E_{≥b}/∂S^b for each boundary b, by BPTT over the whole trial (all paths): the external gradient of
    the boundary state, the quantity a synthetic gradient estimates. A reference (and the oracle of the
    consistency tests), independent of :func:`run_windows`."""
    cell, readout = network.cell, network.readout
    layout = StateLayout(cell, readout)
    wanted = sorted({int(b) for b in boundaries})
    batch, n_steps = x.shape[0], x.shape[1]
    with torch.enable_grad():
        p = {n: v.detach() for n, v in params.items()}
        state, y = layout.leaves(cell.init_state(batch, dtype=x.dtype, device=x.device),
                                 readout.init_state(batch, dtype=x.dtype, device=x.device))
        nodes, ys, zs = {}, [], []
        for t in range(n_steps):
            if t in wanted:  # fresh nodes whose only consumers are the steps after the boundary
                fields = list(state)
                for i in layout.fields:
                    fields[i] = fields[i].clone()
                state, y = type(state)(*fields), y.clone()
                nodes[t] = [state[i] for i in layout.fields] + [y]
            state, z = cell.step(p, state, x[:, t])
            y = readout.step(p, y, z)
            ys.append(y)
            zs.append(z)
        total = loss.value(torch.stack(ys, 1), target, mask)
        if regularizer is not None:
            total = total + regularizer.loss(torch.stack(zs, 1), is_per_task(params["w_rec"]))
        order = [b for b in wanted if b in nodes]
        flat_nodes = [n for b in order for n in nodes[b]]
        grads = torch.autograd.grad(total, flat_nodes, allow_unused=True) if flat_nodes else []
    out, i = {}, 0
    for b in order:
        m = len(nodes[b])
        parts = [torch.zeros_like(n) if g is None else g for n, g in zip(nodes[b], grads[i : i + m], strict=True)]
        out[b] = torch.cat(parts, -1).detach()
        i += m
    return out
