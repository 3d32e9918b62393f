"""What LIF and ALIF neurons share (Bellec et al. 2020 "new" convention, one step of ``dt_ms``, `cell.spec`):

    v_j^t = α v_j^{t-1} + s·(Σ_{i≠j} W^rec_ji z_i^{t-1} + Σ_i W^in_ji x_i^t) − v_th z_j^{t-1}
    z_j^t = H((v_j^t − A_j^t) / v_th),  blocked while the refractory counter is > 0

``s`` is 1 (new convention) or 1 − α (``input_scaling="old"``, the LightLIF convention). The reset subtracts
the baseline threshold one step after the spike. The refractory counter follows the authors' code,
``r^t = clip(r^{t-1} + n_ref·z^t − 1, 0, n_ref)`` with spiking blocked at step t while r^{t-1} > 0, so with
n_ref = 5 a neuron is silent for the 4 steps after a spike. The state stores the counter *in force at its
step* (``ref^t = r^{t-1}``, computed at the start of the step from the previous state), so that the
pseudo-derivative ψ = ∂z/∂v = (γ/v_th)·pd((v − A)/v_th), zero while refractory, is a function of one state.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, replace
from functools import cached_property

import torch

from ..errors import require_choice, require_count, require_positive
from ..numerics import native
from ..numerics.linalg import linear
from .base import Params, RecurrentCell, cuts_coupling, cuts_reset, gaussian
from .spec import NeuronSpec
from .spike import SURROGATE_CODES, pseudo_derivative, spike, validate_surrogate


@dataclass(frozen=True)
class SpikingNeurons(RecurrentCell):
    n_in: int
    n_rec: int
    tau_m: float = 20.0
    v_th: float = 0.6
    n_ref: int = 5
    gamma_pd: float = 0.3
    surrogate: str = "triangle"
    input_scaling: str = "new"
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): no default, one step for every part

    self_connections = False
    # whether the one-node time loop of numerics.fused_loop (hand-written backward, native kernels) computes this
    # cell's equations — LIF and ALIF; a cell with other dynamics sets False and runs its own step in every loop
    has_fused_loop = True
    config_name = None  # the name errors and make_cell use (None: the class name, lower case)
    spec_type = NeuronSpec  # the record of the population's constants

    def __post_init__(self):
        name = self.config_name or type(self).__name__.lower()
        require_count(f"{name}.n_in", self.n_in)
        require_count(f"{name}.n_rec", self.n_rec)
        require_positive(f"{name}.tau_m", self.tau_m)
        require_positive(f"{name}.v_th", self.v_th)
        require_count(f"{name}.n_ref", self.n_ref, minimum=0)
        require_positive(f"{name}.dt_ms", self.dt_ms)
        require_choice(f"{name}.input_scaling", self.input_scaling, ("new", "old"))
        validate_surrogate(name, self.gamma_pd, self.surrogate)

    @cached_property
    def spec(self) -> NeuronSpec:
        """The population's constants, stated once: the step, ψ, the traces and the export read them here."""
        spec = self.spec_type(**self._spec_fields())
        return replace(spec, input_scale=1.0 - spec.alpha) if self.input_scaling == "old" else spec

    def _spec_fields(self) -> dict:
        return dict(model="lif", n=self.n_rec, dt_ms=self.dt_ms, tau_m_ms=self.tau_m, v_th=self.v_th,
                    n_ref=self.n_ref, input_scale=1.0, surrogate=self.surrogate, gamma_pd=self.gamma_pd)

    @property
    def alpha(self) -> float:
        return self.spec.alpha

    @property
    def input_scale(self) -> float:
        return self.spec.input_scale

    def init_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Params:
        """W^in ~ N(0,1)/√n_in, W^rec ~ N(0,1)/√n_rec with zero diagonal (the IGITUGraz initialisation)."""
        w_in = gaussian((self.n_rec, self.n_in), 1.0 / math.sqrt(self.n_in), generator, dtype)
        w_rec = gaussian((self.n_rec, self.n_rec), 1.0 / math.sqrt(self.n_rec), generator, dtype)
        w_rec = w_rec * (1.0 - torch.eye(self.n_rec, dtype=dtype))
        return {"w_in": w_in, "w_rec": w_rec}

    def output(self, state) -> torch.Tensor:
        return state.z

    @staticmethod
    def _previous_spikes(z_prev: torch.Tensor, paths: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(z^{t-1} as the other neurons receive it, z^{t-1} as it resets its own neuron) on ``paths``."""
        # spiking cells have no self-connections: on "internal" the own path is the reset alone
        z_other = z_prev.detach() if cuts_coupling(paths) else z_prev
        z_reset = z_prev.detach() if cuts_reset(paths) else z_prev
        return z_other, z_reset

    def _membrane(self, params: Params, v_prev, z_prev, i_in, paths: str) -> torch.Tensor:
        spec = self.spec
        z_other, z_reset = self._previous_spikes(z_prev, paths)
        base = torch.add(spec.alpha * v_prev + i_in, z_reset, alpha=-spec.v_th)
        return linear(params["w_rec"], z_other, add=base, scale=spec.input_scale)

    def _refractory(self, ref_prev: torch.Tensor, z_prev: torch.Tensor) -> torch.Tensor:
        """The counter in force at this step, from the previous step's counter and spike (no gradient)."""
        n_ref = self.spec.n_ref
        if n_ref == 0:
            return ref_prev
        return torch.add(ref_prev, z_prev.detach(), alpha=n_ref).sub_(1.0).clamp_(0.0, float(n_ref))

    def _fire(self, v: torch.Tensor, threshold, ref: torch.Tensor) -> torch.Tensor:
        spec = self.spec
        z = spike((v - threshold) / spec.v_th, spec.gamma_pd, spec.surrogate)
        return z if spec.n_ref == 0 else z.masked_fill(ref > 0, 0.0)

    def _psi(self, v: torch.Tensor, ref: torch.Tensor, offset: torch.Tensor | None = None) -> torch.Tensor:
        """∂z/∂v at a step whose refractory counter in force is ``ref``, threshold v_th (+ ``offset``, the
        adaptive part of an ALIF threshold). One native pass on CPU tensors (:class:`_NativePsi`)."""
        spec = self.spec
        if native.usable(v, ref, offset) and v.shape == ref.shape and (offset is None or offset.shape == v.shape):
            return _NativePsi.apply(v, offset, ref, spec)
        return _torch_psi(spec, v, ref, offset)


def _torch_psi(spec, v: torch.Tensor, ref: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
    """ψ in torch operations: the reference, and what the native ψ differentiates when differentiated twice."""
    threshold = spec.v_th if offset is None else spec.v_th + offset
    psi = pseudo_derivative((v - threshold) / spec.v_th, spec.gamma_pd, spec.surrogate) / spec.v_th
    return psi if spec.n_ref == 0 else psi.masked_fill(ref > 0, 0.0)


class _NativePsi(torch.autograd.Function):
    """ψ of a whole trial in one pass; its derivative (∂ψ/∂v, and −∂ψ/∂v for the threshold offset) in one more."""

    @staticmethod
    def forward(v, offset, ref, spec):
        return native.module().pseudo_derivative(v, offset, ref, None, spec.v_th, spec.gamma_pd,
                                                 SURROGATE_CODES[spec.surrogate], spec.n_ref > 0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        v, offset, ref, spec = inputs
        ctx.spec = spec
        ctx.save_for_backward(v, offset, ref)

    @staticmethod
    def backward(ctx, grad):
        v, offset, ref = ctx.saved_tensors
        spec = ctx.spec
        if torch.is_grad_enabled():  # differentiated again: autograd through the torch formula, same inputs
            v_leaf = v if v.requires_grad else v.detach().requires_grad_()
            psi = _torch_psi(spec, v_leaf, ref, offset)
            (grad_v,) = torch.autograd.grad(psi, v_leaf, grad, create_graph=True)
        else:
            grad_v = native.module().pseudo_derivative(v, offset, ref, grad.contiguous(), spec.v_th, spec.gamma_pd,
                                                       SURROGATE_CODES[spec.surrogate], spec.n_ref > 0)
        grad_offset = -grad_v if offset is not None and ctx.needs_input_grad[1] else None  # ψ depends on v − offset
        return grad_v, grad_offset, None, None

