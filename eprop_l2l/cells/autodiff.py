"""Eligibility traces derived from a cell's ``step`` by forward-mode autodiff — the generic path.

Under the e-prop convention (``step(..., paths="local")``: previous outputs reach other neurons and the own reset
as constants) neuron j's state depends on W_ji only through neuron j itself. So perturbing a whole column i of
one weight block (all postsynaptic neurons at once) and pushing the tangent through ``step`` with ``jvp`` yields,
for every j at once, the eligibility vector ε_ji (the tangent of the state) and the eligibility trace
e_ji = ∂z_j/∂h_j · ε_ji (the tangent of the output). One ``jvp`` per (row block, presynaptic index), vmapped.

It needs nothing but ``step``: a new cell gets correct online e-prop without closed forms, and the closed forms
of LIF/ALIF/LSTM are tested against it. Cost O(n_pre) forward passes per step: a reference, not the fast path.
"""

from __future__ import annotations

import torch
from torch.func import jvp, vmap


class AutodiffTraces:
    def __init__(self, cell, names: tuple[str, ...] = ("w_in", "w_rec")):
        self.cell = cell
        self.names = names

    def _directions(self, w: torch.Tensor, name: str) -> torch.Tensor:
        """Tangents of ``w``: one per (row block g, presynaptic i), ones on rows of block g in column i."""
        k, n = self.cell.rows_per_neuron, self.cell.n_rec
        per_task = w.dim() == (2 if name == "bias" else 3)
        rows = w.shape[-1] if name == "bias" else w.shape[-2]
        n_pre = 1 if name == "bias" else w.shape[-1]
        block = torch.zeros(k, rows, dtype=w.dtype, device=w.device)
        for g in range(k):
            block[g, g * n : (g + 1) * n] = 1.0
        if name == "bias":
            d = block  # [k, rows]
        else:
            eye = torch.eye(n_pre, dtype=w.dtype, device=w.device)
            d = (block[:, None, :, None] * eye[None, :, None, :]).reshape(k * n_pre, rows, n_pre)
        if per_task:
            d = d.unsqueeze(1).expand(d.shape[0], *w.shape).contiguous()
        return d

    def init(self, params, state) -> dict:
        tangents = {}
        for name in self.names:
            n_dir = self._directions(params[name], name).shape[0]
            tangents[name] = type(state)(*(torch.zeros(n_dir, *f.shape, dtype=f.dtype, device=f.device) for f in state))
        return tangents

    def step(self, params, prev, tangents: dict, x_t: torch.Tensor):
        """One step: (state, z, tangents, {name: e [B, rows, n_pre]})."""
        k, n = self.cell.rows_per_neuron, self.cell.n_rec
        elig, new_tangents, state, z = {}, {}, None, None
        for name in self.names:
            w = params[name]

            def f(w_, state_, name=name):
                return self.cell.step({**params, name: w_}, state_, x_t, paths="local")

            def push(dw, dstate, w=w, f=f):
                (s, out), (ds, dout) = jvp(f, (w, prev), (dw, dstate))
                return s, out, ds, dout

            states, outs, d_state, d_out = vmap(push)(self._directions(w, name), tangents[name])
            state = type(prev)(*(field[0] for field in states))
            z = outs[0]
            new_tangents[name] = d_state
            n_pre = d_out.shape[0] // k
            e = d_out.reshape(k, n_pre, *d_out.shape[1:])  # [k, n_pre, B, n]
            elig[name] = e.permute(2, 0, 3, 1).reshape(d_out.shape[1], k * n, n_pre)
        return state, z, new_tangents, elig
