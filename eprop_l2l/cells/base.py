"""The contract every recurrent cell fulfils, and the closed-form e-prop pieces shared by cells whose
eligibility trace factorises.

A cell is a frozen dataclass of hyper-parameters (never learned tensors). It provides

* ``init_params(generator, dtype) -> dict[str, Tensor]`` — ``w_in [rows, n_in]``, ``w_rec [rows, n_rec]``
  (+ ``bias [rows]`` for cells that have one). Any of them may carry a leading task dimension (fast weights).
* ``init_state(batch, dtype, device) -> State`` — an immutable record (NamedTuple) of ``[B, n_rec]`` tensors.
* ``input_current(params, x)`` and ``step_current(params, state, i_in, paths="full") -> (state, out)`` and
  the composition ``step(params, state, x, paths="full")``: the single source of truth of the dynamics.
  ``paths`` selects which gradient paths of the previous outputs exist (values are never changed):
  ``"full"`` all of them (exact RTRL/BPTT); ``"no_reset"`` the spike that resets a neuron acts on its own
  membrane as a constant; ``"local"`` additionally previous outputs reach *other* neurons as constants — the
  convention of e-prop's eligibility traces (Bellec et al. 2020, Suppl. S1.1); ``"internal"`` previous outputs
  reach other neurons as constants but every path inside a neuron is kept, the reset and a unit's own recurrent
  weight included — OSTL's temporal gradient (Bohnstingl et al. 2022). Dependencies internal to a neuron other
  than the reset (ALIF adaptation) are always kept.
* ``output(state)`` — what the neuron sends to others and to the readout (spikes z, LSTM h, rate φ(h)).
* closed-form e-prop: ``trace_init``, ``trace_step`` (online, causal: eligibility vector ε ← D ε + ∂h/∂W and
  the trace e = ∂z/∂h · ε for one weight group with presynaptic signal ``pre``) and
  ``adjoint(params, trajectory, signal)`` (fused, whole trial: the per-neuron factor g with
  ``Σ_t S_j^t e_ji^t = Σ_t g_j^t pre_i^t``).
* ``rows_per_neuron``: weight rows belonging to one neuron (4 for LSTM gates, else 1), ``self_connections``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch

from ..errors import ConfigError
from ..numerics.eligibility_adjoint import eligibility_adjoint
from ..numerics.linalg import linear, outer

GRADIENT_PATHS = ("full", "no_reset", "local", "internal")


def cuts_coupling(paths: str) -> bool:
    """Whether previous outputs reach the other neurons as constants on ``paths``."""
    return paths in ("local", "internal")


def cuts_reset(paths: str) -> bool:
    """Whether a neuron's reset by its own previous spike is a constant on ``paths``."""
    return paths in ("no_reset", "local")


def recurrent_drive(w_rec: torch.Tensor, prev: torch.Tensor, paths: str, rows_per_neuron: int = 1) -> torch.Tensor:
    """W^rec·out^{t-1} with the gradient paths of ``paths`` (the values never change): on ``"local"`` the previous
    outputs are constants; on ``"internal"`` a unit's own output still acts through its own weight (the diagonal
    of each gate block), added as ``W_jj·(out_j − out_j)`` with only the first term differentiated."""
    if not cuts_coupling(paths):
        return linear(w_rec, prev)
    drive = linear(w_rec, prev.detach())
    if paths == "internal":
        n = prev.shape[-1]
        own = w_rec.reshape(*w_rec.shape[:-2], rows_per_neuron, n, n).diagonal(dim1=-2, dim2=-1).flatten(-2)
        drive = drive + own * torch.cat([prev - prev.detach()] * rows_per_neuron, -1)
    return drive

Params = dict[str, torch.Tensor]


def gaussian(shape, scale: float, generator: torch.Generator, dtype: torch.dtype) -> torch.Tensor:
    """N(0, 1)·scale drawn from an explicit generator (every random draw in the package goes through one)."""
    return torch.randn(*shape, generator=generator, dtype=dtype) * scale


class _StackSteps(torch.autograd.Function):
    """``torch.stack`` whose backward is one ``unbind``. torch's own backward selects each step; differentiated
    again (the MAML-style inner step: create_graph through a trial) every select scatters into a zero tensor of
    the whole trial — O(T²) memory traffic — where the unbind's own backward is one stack."""

    @staticmethod
    def forward(dim, *steps):
        return torch.stack(steps, dim)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.dim = inputs[0]

    @staticmethod
    def backward(ctx, grad):
        return (None, *grad.unbind(ctx.dim))


def stack_steps(steps, dim: int = 1) -> torch.Tensor:
    """Per-step tensors → one tensor along ``dim`` (the same values as ``torch.stack``)."""
    if torch._C._are_functorch_transforms_active() or not torch.is_grad_enabled():
        return torch.stack(steps, dim)
    return _StackSteps.apply(dim, *steps)


def stack_states(states: list[NamedTuple], dim: int = 1) -> NamedTuple:
    """List of per-step records → one record of ``[B, T, ...]`` tensors."""
    cls = type(states[0])
    return cls(*(stack_steps(field, dim) for field in zip(*states, strict=True)))


class RecurrentCell:
    """Shared plumbing: the step is the input current followed by the state update."""

    rows_per_neuron: int = 1
    self_connections: bool = True

    def input_current(self, params: Params, x: torch.Tensor) -> torch.Tensor:
        current = linear(params["w_in"], x)
        return current if self.input_scale == 1.0 else self.input_scale * current

    def step(self, params: Params, state, x: torch.Tensor, paths: str = "full"):
        return self.step_current(params, state, self.input_current(params, x), paths)

    @property
    def input_scale(self) -> float:
        return 1.0


class FactorisedTraceCell(RecurrentCell):
    """Cells with one state variable per neuron whose own leak is a constant ``alpha``.

    ε_ji^t = α ε_ji^{t-1} + s·pre_i^t  and  e_ji^t = ψ_j^t ε_ji^t: the eligibility vector is the presynaptic
    trace ``F_α(s·pre)`` alone, so the online state is O(B·n_pre) and the fused adjoint is ``s·F_α^rev(ψ S)``.
    Subclasses give ``alpha``, ``input_scale`` and ``psi(params, state)`` (∂z/∂h, a function of the state).
    """

    def trace_init(self, params: Params, state, n_pre: int) -> Any:
        return torch.zeros(state[0].shape[0], n_pre, dtype=state[0].dtype, device=state[0].device)

    def trace_step(self, params: Params, trace, prev_state, state, pre: torch.Tensor):
        trace = self.alpha * trace + self.input_scale * pre
        return trace, outer(self.psi(params, state), trace)

    def adjoint(self, params: Params, trajectory, signal: torch.Tensor) -> torch.Tensor:
        psi = self.psi(params, trajectory.states)
        g = eligibility_adjoint(psi, signal, self.alpha)
        return g if self.input_scale == 1.0 else self.input_scale * g


def expand_rows(cell, signal: torch.Tensor) -> torch.Tensor:
    """Per-neuron signal ``[..., n_rec]`` → per weight row ``[..., rows_per_neuron·n_rec]`` (gate-major rows)."""
    k = cell.rows_per_neuron
    return signal if k == 1 else torch.cat([signal] * k, -1)


def mask_self_connections(cell, name: str, grad: torch.Tensor) -> torch.Tensor:
    """Recurrent spiking weights have no self-connections: their diagonal is not a parameter."""
    if name != "w_rec" or cell.self_connections:
        return grad
    n = grad.shape[-1]
    return grad * (1.0 - torch.eye(n, dtype=grad.dtype, device=grad.device))


def check_params(cell, params: Params) -> None:
    """Shape check with a message naming the tensor: a wrong fast-weight shape fails before any compute."""
    rows = cell.rows_per_neuron * cell.n_rec
    for key, cols in (("w_in", cell.n_in), ("w_rec", cell.n_rec)):
        if key not in params:
            raise ConfigError(f"params.{key}", "missing")
        if tuple(params[key].shape[-2:]) != (rows, cols):
            shape = tuple(params[key].shape)
            raise ConfigError(f"params.{key}", f"expected trailing shape {(rows, cols)}, got {shape}")

