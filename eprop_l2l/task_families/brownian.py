"""Smoothed Brownian joint velocities as natural e-prop's robot task draws them (Ortner et al. 2025, the
authors' TF2 code, ``online_learning_robot``; docs/natural_eprop.md), and the two inputs of that task: the
sequential clock and the binary position code.

Velocities, per joint and task, in this order:

1. a random walk ω_raw^t = Σ_{s≤t} ε^s, ε ~ N(0, (δ·0.1)²) (the recipe's δ·√0.01 per step);
2. padded with M − 1 zeros in front and the time-reversed last M − 1 samples behind, and cross-correlated with
   the normalised *periodic* Hann window w[m] = ½ − ½ cos(2πm/M), m < M (so the result is centred:
   ω_s^k = Σ_m w[m] ω_raw^{k − M/2 + 1 + m}, zeros before the start, the trial's end mirrored after it);
3. clipped to ±``clip``.
"""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError, require_count


def hann_periodic(window: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """w[m] = ½ − ½ cos(2πm/M), m = 0..M−1, normalised to sum 1."""
    w = torch.hann_window(window, periodic=True, dtype=dtype, device=device)
    return w / w.sum()


def smoothed_brownian(batch: int, n_joints: int, n_steps: int, generator: torch.Generator, delta: float,
                      window: int, clip: float) -> torch.Tensor:
    """Velocities ``[batch, n_steps, n_joints]`` (float64), drawn from ``generator``."""
    if n_steps < window - 1:
        raise ValueError(f"n_steps must be >= window - 1 = {window - 1} (the mirrored tail), got {n_steps}")
    dev = generator.device
    steps = torch.randn(batch * n_joints, n_steps, generator=generator, dtype=torch.float64, device=dev)
    raw = torch.cumsum(delta * math.sqrt(0.01) * steps, -1)
    tail = raw[:, -(window - 1):].flip(-1)
    padded = torch.cat([torch.zeros(batch * n_joints, window - 1, dtype=torch.float64, device=dev), raw, tail], -1)
    w = hann_periodic(window, device=dev)
    smooth = torch.nn.functional.conv1d(padded.unsqueeze(1), w.reshape(1, 1, -1)).squeeze(1)  # cross-correlation
    start = window // 2
    omega = smooth[:, start:start + n_steps].clamp(-clip, clip)
    return omega.reshape(batch, n_joints, n_steps).transpose(1, 2).contiguous()


def sequential_clock(n_steps: int, n_clock: int, segment_steps: int, period_steps: int,
                     dtype=torch.float32) -> torch.Tensor:
    """``[n_steps, n_clock]``: neuron n spikes every ``period_steps`` steps in [n·segment, (n+1)·segment)."""
    clock = torch.zeros(n_steps, n_clock, dtype=dtype)
    for n in range(n_clock):
        clock[n * segment_steps:min((n + 1) * segment_steps, n_steps):period_steps, n] = 1.0
    return clock


# the codes of a target path an arm family offers its error module: Gaussian-tuned population rates (e-prop 2)
# or the binary position code below (natural e-prop)
CONTEXT_CODES = ("population", "binary")
MAX_CODE_BITS = 30  # ⌊(c + 1)·2^(bits−1)⌋ stays exact in float64 and int64 arithmetic


def check_code_bits(key: str, bits: int) -> None:
    require_count(key, bits)
    if bits > MAX_CODE_BITS:
        raise ConfigError(key, f"must be <= {MAX_CODE_BITS}, got {bits}")


def binary_position_code(position: torch.Tensor, bits: int = 16) -> torch.Tensor:
    """Spikes ``[..., T, n_axes·bits]`` of the recipe's position code: per axis, the ``bits`` low bits (least
    significant first) of ⌊(c + 1)·2^(bits−1)⌋, c in metres; a bit that is 1 spikes at every step. The code
    covers [−1, 1) m at 2^−(bits−1) m; as in the recipe, a coordinate outside wraps round (c ≥ 1 m codes as
    c − 2)."""
    value = torch.floor((position.to(torch.float64) + 1.0) * 2 ** (bits - 1)).to(torch.int64)
    weights = 2 ** torch.arange(bits, device=position.device)
    code = (value.unsqueeze(-1) // weights) % 2  # [..., T, n_axes, bits]
    return code.flatten(-2).to(position.dtype)
