"""LSTM units (Hochreiter & Schmidhuber 1997, with a forget gate) and their e-prop eligibility traces
(Bellec et al. 2020, Supplementary "e-prop for LSTM").

Four gates per neuron, weight rows gate-major (``rows_per_neuron = 4``: rows ``[0, N)`` input gate i,
``[N, 2N)`` forget gate f, ``[2N, 3N)`` candidate g, ``[3N, 4N)`` output gate o)::

    a^t = W^in x^t + b + W^rec h^{t-1}                  (all four gates at once, [B, 4N])
    i, f, o = σ(a_i, a_f, a_o),  g = tanh(a_g)
    c^t = f^t c^{t-1} + i^t g^t,   h^t = o^t tanh(c^t)

The hidden state of e-prop is c (the per-neuron Jacobian is D^t = f^t, because h^{t-1} reaches every gate —
the own ones included — as a constant under ``paths="local"``), the output is h. For a weight of gate row
(gate, j) with presynaptic signal pre_k (x_k^t, h_k^{t-1} or 1 for the bias):

    gates i, f, g:  ε^t = f^t ε^{t-1} + coef^t pre^t,   e^t = q^t ε^t,  q = o (1 − tanh² c)
                    coef_i = g σ'(a_i),  coef_f = c^{t-1} σ'(a_f),  coef_g = i (1 − g²)
    gate o:         e^t = tanh(c^t) σ'(a_o) pre^t        (no recursion: o does not feed c)

σ' is taken from the stored activation, σ(1 − σ). The gate activations of the step are kept in the state so
that every closed form is a function of (previous state, state) alone. ``paths="no_reset"`` equals ``"full"``
(an LSTM has no reset).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch

from ..errors import ConfigError, require_count
from ..numerics.linalg import linear, outer
from .base import Params, RecurrentCell, gaussian, recurrent_drive

GATES = ("i", "f", "g", "o")


class LSTMState(NamedTuple):
    c: torch.Tensor  # cell state c^t
    h: torch.Tensor  # output h^t = o tanh(c)
    i: torch.Tensor  # input gate activation σ(a_i^t)
    f: torch.Tensor  # forget gate activation σ(a_f^t)
    g: torch.Tensor  # candidate tanh(a_g^t)
    o: torch.Tensor  # output gate activation σ(a_o^t)


@dataclass(frozen=True)
class LSTM(RecurrentCell):
    n_in: int
    n_rec: int
    forget_bias: float = 1.0

    rows_per_neuron = 4
    self_connections = True

    def __post_init__(self):
        require_count("lstm.n_in", self.n_in)
        require_count("lstm.n_rec", self.n_rec)
        fb = self.forget_bias
        if isinstance(fb, bool) or not isinstance(fb, (int, float)) or not math.isfinite(fb):
            raise ConfigError("lstm.forget_bias", f"must be a finite number, got {fb!r}")

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        """W^in ~ N(0,1)/√n_in, W^rec ~ N(0,1)/√n_rec; bias 0 except ``forget_bias`` on the forget-gate rows."""
        n = self.n_rec
        w_in = gaussian((4 * n, self.n_in), 1.0 / math.sqrt(self.n_in), generator, dtype)
        w_rec = gaussian((4 * n, n), 1.0 / math.sqrt(n), generator, dtype)
        bias = torch.zeros(4 * n, dtype=dtype)
        bias[n : 2 * n] = self.forget_bias
        return {"w_in": w_in, "w_rec": w_rec, "bias": bias}

    def init_state(self, batch: int, dtype=torch.float32, device=None) -> LSTMState:
        zeros = torch.zeros(batch, self.n_rec, dtype=dtype, device=device)
        return LSTMState(zeros, zeros, zeros, zeros, zeros, zeros)

    def input_current(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        """``W^in x + b`` for x ``[B, n_in]`` or ``[B, T, n_in]``; b ``[4N]`` or per task ``[B, 4N]``."""
        b = params["bias"]
        if b.dim() == 2 and x.dim() == 3:
            b = b.unsqueeze(-2)
        return linear(params["w_in"], x) + b

    def step_current(self, params: Params, state: LSTMState, i_in: torch.Tensor, paths: str = "full"):
        a = i_in + recurrent_drive(params["w_rec"], state.h, paths, self.rows_per_neuron)
        a_i, a_f, a_g, a_o = a.chunk(4, -1)
        i, f, g, o = torch.sigmoid(a_i), torch.sigmoid(a_f), torch.tanh(a_g), torch.sigmoid(a_o)
        c = f * state.c + i * g
        h = o * torch.tanh(c)
        return LSTMState(c, h, i, f, g, o), h

    def output(self, state: LSTMState) -> torch.Tensor:
        return state.h

    # --- closed-form e-prop -------------------------------------------------------------------------------
    @staticmethod
    def _factors(prev_state: LSTMState, state: LSTMState):
        """(coef of gates i, f, g ``[..., 3N]``; q = ∂h/∂c ``[..., N]``; o-gate factor ``[..., N]``)."""
        tanh_c = torch.tanh(state.c)
        coef = torch.cat(
            [state.g * state.i * (1 - state.i), prev_state.c * state.f * (1 - state.f), state.i * (1 - state.g**2)],
            -1,
        )
        q = state.o * (1 - tanh_c**2)
        out_gate = tanh_c * state.o * (1 - state.o)
        return coef, q, out_gate

    def trace_init(self, params: Params, state: LSTMState, n_pre: int) -> torch.Tensor:
        """ε for the rows of gates i, f, g: ``[B, 3N, n_pre]``."""
        b = state.c.shape[0]
        return torch.zeros(b, 3 * self.n_rec, n_pre, dtype=state.c.dtype, device=state.c.device)

    def trace_step(self, params: Params, trace: torch.Tensor, prev_state: LSTMState, state: LSTMState, pre):
        coef, q, out_gate = self._factors(prev_state, state)
        decay = torch.cat([state.f] * 3, -1).unsqueeze(-1)
        eps = decay * trace + outer(coef, pre)
        e_gates = torch.cat([q] * 3, -1).unsqueeze(-1) * eps
        e = torch.cat([e_gates, outer(out_gate, pre)], -2)
        return eps, e

    def adjoint(self, params: Params, trajectory, signal: torch.Tensor):
        """Reverse-time adjoint of ε^t = f^t ε^{t-1} + coef^t pre^t (per neuron, shared by gates i, f, g):

        λ^t = q^t S^t + f^{t+1} λ^{t+1} (λ^T = 0),  g_gate^t = coef_gate^t λ^t,  g_o^t = tanh(c^t) σ'(a_o^t) S^t.
        """
        states = trajectory.states
        coef, q, out_gate = self._factors(trajectory.previous(), states)
        drive = q * signal
        lam = torch.zeros_like(signal[:, 0])
        lams = []
        for t in range(signal.shape[1] - 1, -1, -1):
            lam = drive[:, t] + (states.f[:, t + 1] * lam if t + 1 < signal.shape[1] else 0.0)
            lams.append(lam)
        lams.reverse()
        lam = torch.stack(lams, 1)
        return torch.cat([coef * torch.cat([lam] * 3, -1), out_gate * signal], -1)
