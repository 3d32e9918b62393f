"""Pattern generation (spec D1): reproduce a random sum of sines from frozen Poisson input.

Each task is one target pattern per output channel,

    y*(t) = Σ_k a_k sin(2π t / P_k + φ_k),   a_k ~ U[amp_range],  φ_k ~ U[0, 2π],   t = step · dt_ms,

then shifted so that it starts at 0 and scaled so that max_t |y*(t)| = 1 (per task and channel). The input is
``n_in`` channels of Poisson spikes at ``input_rate_hz``; with ``frozen_input`` (the default, as in the paper) it
is one sample, drawn once from a generator seeded with ``input_seed`` and shared by every task and every call.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from functools import lru_cache
from typing import Any, ClassVar

import torch

from ..errors import ConfigError, require_count, require_non_negative, require_positive
from ..units import per_step
from .base import (
    FamilyBase,
    TaskBatch,
    bernoulli_spikes,
    generator_device,
    require_bool,
    require_int,
    spike_probability,
)


def _float_tuple(key: str, value: Any) -> tuple[float, ...]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise ConfigError(key, f"must be a sequence of numbers, got {value!r}")
    out = []
    for v in value:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ConfigError(key, f"must contain finite numbers, got {v!r}")
        out.append(float(v))
    return tuple(out)


@lru_cache(maxsize=16)
def _frozen_poisson(n_steps: int, n_in: int, p: float, seed: int) -> torch.Tensor:
    """The frozen input sample ``[T, n_in]`` (float32, CPU); callers must not modify it."""
    g = torch.Generator(device="cpu").manual_seed(seed)
    return bernoulli_spikes(p, (n_steps, n_in), g)


@dataclass(frozen=True)
class SumOfSines(FamilyBase):
    n_in: int = 100
    n_out: int = 1
    n_steps: int = 1000
    input_rate_hz: float = 50.0
    periods_ms: tuple[float, ...] = (1000.0, 500.0, 333.0, 200.0)
    amp_range: tuple[float, float] = (0.5, 2.0)
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): n_steps·dt_ms is the trial
    input_seed: int = 0
    frozen_input: bool = True

    name: ClassVar[str] = "sines"
    loss: ClassVar[str] = "mse"

    def __post_init__(self) -> None:
        k = self._key
        require_count(k("n_in"), self.n_in)
        require_count(k("n_out"), self.n_out)
        require_count(k("n_steps"), self.n_steps)
        require_positive(k("dt_ms"), self.dt_ms)
        require_non_negative(k("input_rate_hz"), self.input_rate_hz)
        spike_probability(k("input_rate_hz"), self.input_rate_hz, self.dt_ms)
        periods = _float_tuple(k("periods_ms"), self.periods_ms)
        if not periods:
            raise ConfigError(k("periods_ms"), "must contain at least one period")
        for p in periods:
            require_positive(k("periods_ms"), p)
        amps = _float_tuple(k("amp_range"), self.amp_range)
        if len(amps) != 2 or amps[0] > amps[1]:
            raise ConfigError(k("amp_range"), f"must be (low, high) with low <= high, got {self.amp_range!r}")
        require_int(k("input_seed"), self.input_seed)
        require_bool(k("frozen_input"), self.frozen_input)
        object.__setattr__(self, "periods_ms", periods)
        object.__setattr__(self, "amp_range", amps)

    @property
    def spike_prob(self) -> float:
        """Bernoulli probability of an input spike per step."""
        return per_step(self.input_rate_hz, self.dt_ms)

    def frozen_inputs(self) -> torch.Tensor:
        """The frozen input sample ``[n_steps, n_in]`` (float32, CPU, a fresh copy)."""
        return _frozen_poisson(self.n_steps, self.n_in, self.spike_prob, self.input_seed).clone()

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        self._check_batch_size(batch_size)
        device = generator_device(generator)
        B, T, K = batch_size, self.n_steps, len(self.periods_ms)
        f64 = torch.float64
        lo, hi = self.amp_range
        amps = lo + (hi - lo) * torch.rand(B, self.n_out, K, generator=generator, device=device, dtype=f64)
        phases = 2 * math.pi * torch.rand(B, self.n_out, K, generator=generator, device=device, dtype=f64)

        t_ms = torch.arange(T, device=device, dtype=f64) * self.dt_ms  # [T]
        y = torch.zeros(B, self.n_out, T, device=device, dtype=f64)
        for k, period in enumerate(self.periods_ms):
            y += amps[..., k, None] * torch.sin(2 * math.pi * t_ms / period + phases[..., k, None])
        offset = y[..., 0].clone()
        y -= offset[..., None]
        scale = y.abs().amax(dim=-1).clamp_min(1e-12)
        y /= scale[..., None]

        if self.frozen_input:
            frozen = _frozen_poisson(T, self.n_in, self.spike_prob, self.input_seed)
            inputs = frozen.to(device=device, dtype=dtype)[None].expand(B, T, self.n_in).contiguous()
        else:
            inputs = bernoulli_spikes(self.spike_prob, (B, T, self.n_in), generator).to(dtype)

        return TaskBatch(
            inputs=inputs,
            targets=y.transpose(1, 2).to(dtype).contiguous(),
            mask=torch.ones(B, T, device=device, dtype=dtype),
            extra={
                "amplitudes": amps.to(dtype),  # [B, n_out, K]
                "phases": phases.to(dtype),  # [B, n_out, K]
                "offset": offset.to(dtype),  # [B, n_out], y*(0) before the shift
                "scale": scale.to(dtype),  # [B, n_out], max|y* - y*(0)| before the scaling
            },
            dt_ms=self.dt_ms,
        )
