"""The trainee's weights as a phase-change-memory (PCM) crossbar holds them: the device model that natural e-prop's
hardware result was trained and measured with (Ortner et al. 2025, Nat. Commun. 16; its PCM statistics are the
published fits of Joshi et al. 2020, Nat. Commun. 11). Hardware-aware meta-training runs the inner loop through
it; evaluation with it gives the "noise model" row beside the paper's chip.

A weight w ∈ [−w_max, w_max] is a conductance g = w·g_max/w_max on one device of its sign. Three effects, each
of which can be switched off:

- **programming** (writing a weight): g + N(0, σ_p²), σ_p = max(c₂w̃² + c₁|w̃| + c₀, 0) with w̃ = w/w_max, in
  conductance units, clipped to the device's sign range; a zero weight is not programmed;
- **drift** (between programming and reading, a time ratio t/t₀): g·(t/t₀)^(−ν), ν = |N(μ(w̃), s(w̃)²)| per
  device, μ and s linear in ln|w̃| and clipped to the fitted ranges;
- **read noise** (reading the array): g + N(0, σ_r²), σ_r = |g|·q·√ln((t + t_r)/t_r)/√2, with
  q = min(a/|g|^b, q_max), for a synapse of two devices. ``read_every`` says how often it is drawn: once per
  trial and task (``"trial"``, the default: one noisy matrix per trial, which the fused time loops take), or at
  every time step (``"step"``, as the authors' code reads the weights inside each step's matrix product;
  :mod:`.read_each_step`).

The one-shot update is programmed at the device's resolution: ΔW is rounded to multiples of ``update_step``,
and only the devices whose ΔW is non-zero are written again (programming noise and a fresh drift on those).

Gradients pass straight through every draw and through the rounding (the outer loop sees the noise-free
dependence); each draw comes from the generator the caller passes.

Deviations from the authors' model: by default read noise is drawn once per trial and task rather than at every
time step (``read_every="step"`` is theirs); weights written at the start of an episode get
programming noise and drift, where the authors' start adds drift and a small uniform jitter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError, require_choice, require_non_negative, require_positive

CHIP_WEIGHTS = ("w_in", "w_rec", "w_out")  # the trainee's weights on the crossbar (the error module is off-chip)
READ_SCHEDULES = ("trial", "step")  # how often read noise is drawn (PCMDevice.read_every)


@dataclass(frozen=True)
class PCMDevice:
    g_max: float = 25.0  # the conductance of |w| = w_max
    w_max: float = 1.0  # weights are clipped to ±w_max
    update_step: float = 1.0 / 16  # the resolution ΔW is programmed at (0: not rounded)
    programming_noise: bool = True
    programming_fit: tuple[float, float, float] = (-1.1731, 1.9650, 0.2635)  # c₂, c₁, c₀ (conductance units)
    drift: bool = True
    drift_time_ratio: float = 32.0  # t/t₀ between programming and reading
    drift_mean: tuple[float, float, float, float] = (-0.0155, 0.0244, 0.049, 0.1)  # μ = a ln|w̃| + b in [lo, hi]
    drift_sd: tuple[float, float, float, float] = (-0.0125, -0.0059, 0.008, 0.045)  # s = a ln|w̃| + b in [lo, hi]
    read_noise: bool = True
    read_every: str = "trial"  # "trial": one draw per trial and task; "step": a fresh draw at every time step
    read_fit: tuple[float, float, float] = (0.0088, 0.65, 0.2)  # a, b, q_max of q = min(a/|g|^b, q_max)
    read_time: float = 32.0  # t (s) since programming
    read_duration: float = 250e-9  # t_r (s)
    devices_per_synapse: int = 2

    def __post_init__(self):
        require_positive("device.g_max", self.g_max)
        require_positive("device.w_max", self.w_max)
        require_non_negative("device.update_step", self.update_step)
        require_positive("device.drift_time_ratio", self.drift_time_ratio)
        require_positive("device.read_time", self.read_time)
        require_positive("device.read_duration", self.read_duration)
        for key in ("programming_noise", "drift", "read_noise"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(f"device.{key}", f"must be true or false, got {getattr(self, key)!r}")
        require_choice("device.read_every", self.read_every, READ_SCHEDULES)
        if self.devices_per_synapse < 1:
            raise ConfigError("device.devices_per_synapse", f"must be >= 1, got {self.devices_per_synapse}")

    # --- the three effects, on weights (each returns a tensor of w's shape) ------------------------------------
    def _normal(self, like: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # drawn on the generator's device (the runs' generators are CPU ones), then moved: the same draws anywhere
        return torch.randn(like.shape, generator=generator, dtype=like.dtype, device=generator.device).to(like.device)

    def programming_sd(self, w: torch.Tensor) -> torch.Tensor:
        """σ_p of writing ``w``, in weight units (0 for zero weights)."""
        c2, c1, c0 = self.programming_fit
        x = (w / self.w_max).abs()
        return (c2 * x**2 + c1 * x + c0).clamp_min(0.0) * (w != 0) * (self.w_max / self.g_max)

    def drift_factor(self, w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(t/t₀)^(−ν) per device, ν drawn from the conductance-dependent fit."""
        log_x = torch.log((w / self.w_max).abs().clamp_min(1e-30))
        (ma, mb, mlo, mhi), (sa, sb, slo, shi) = self.drift_mean, self.drift_sd
        nu = ((ma * log_x + mb).clamp(mlo, mhi) + (sa * log_x + sb).clamp(slo, shi) * self._normal(w, generator)).abs()
        return self.drift_time_ratio ** (-nu)

    def read_sd(self, w: torch.Tensor) -> torch.Tensor:
        """σ_r of reading ``w``, in weight units."""
        a, b, q_max = self.read_fit
        g = (w / self.w_max * self.g_max).abs()
        q = (a / g.clamp_min(1e-30) ** b).clamp(max=q_max)
        spread = math.sqrt(math.log((self.read_time + self.read_duration) / self.read_duration))
        return g * q * spread / math.sqrt(self.devices_per_synapse) * (self.w_max / self.g_max)

    def _clip_to_sign(self, noisy: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Each device conducts one sign: a weight stays on its side of zero and within ±w_max."""
        upper = torch.where(w >= 0, torch.full_like(w, self.w_max), torch.zeros_like(w))
        lower = torch.where(w >= 0, torch.zeros_like(w), torch.full_like(w, -self.w_max))
        return torch.maximum(torch.minimum(noisy, upper), lower)

    @staticmethod
    def _straight_through(w: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        return w + (value - w).detach()

    def program(self, w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The weights after writing ``w`` (clipped to ±w_max) and the drift until they are read. The gradient
        passes straight through the clip too, so a weight beyond the range can still be trained back into it."""
        value = w.detach().clamp(-self.w_max, self.w_max)
        if self.programming_noise:
            value = self._clip_to_sign(value + self.programming_sd(value) * self._normal(value, generator), value)
        if self.drift:
            value = value * self.drift_factor(value, generator)
        return self._straight_through(w, value)

    @property
    def reads_each_step(self) -> bool:
        """Whether read noise is drawn anew at every time step (else once per trial)."""
        return self.read_noise and self.read_every == "step"

    def read(self, w: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One read of the programmed weights ``w`` (a trial's, or one step's with ``read_every="step"``)."""
        if not self.read_noise:
            return w
        value = w.detach()
        value = self._clip_to_sign(value + self.read_sd(value) * self._normal(value, generator), value)
        return self._straight_through(w, value)

    def programmed_update(self, delta: torch.Tensor) -> torch.Tensor:
        """ΔW at the device's resolution (rounded to the nearest multiple of ``update_step``)."""
        if self.update_step == 0:
            return delta
        return self._straight_through(delta, torch.round(delta.detach() / self.update_step) * self.update_step)

    def reprogram(self, w: torch.Tensor, delta: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The programmed weights ``w`` after the update ``delta``: only the devices it changes are written."""
        step = self.programmed_update(delta)
        # a device the rounded step leaves alone keeps its value, but the gradient still passes straight through
        # the rounding: otherwise an update below half a step would never learn to grow
        kept = w + (step - step.detach())
        return torch.where(step.detach() != 0, self.program(w + step, generator), kept)
