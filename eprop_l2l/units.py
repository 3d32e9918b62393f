"""Time units. A run has one time step ``dt_ms`` (``task.dt_ms``); the conversions between physical quantities
(ms, s, Hz) and per-step quantities live here so that no module multiplies by a literal 1000.

Written so that ``dt_ms = 1`` reproduces the former 1-ms arithmetic bit for bit (``x · (1000/1) = x · 1000``).
"""

from __future__ import annotations

import math

from .errors import ConfigError

MS_PER_S = 1000.0
# The step a configuration uses when it names none (task.dt_ms; compare's dt_ms): the recipes' 1 ms.
DEFAULT_STEP_MS = 1.0
# Relative slack for "a whole number of steps": dt_ms reaches the families as dt_s = dt_ms/1000 and back,
# which may move it by an ulp.
WHOLE_STEPS_TOLERANCE = 1e-9


def step_seconds(dt_ms: float) -> float:
    """The step in seconds (kinematics integrate rad/s over it)."""
    return dt_ms / MS_PER_S


def per_step(rate_hz: float, dt_ms: float) -> float:
    """Expected spikes per step (a Bernoulli probability when ≤ 1) of a rate in Hz."""
    return rate_hz * dt_ms / MS_PER_S


def rate_hz(spikes_per_step, dt_ms: float):
    """Firing rate in Hz of a mean spike count per step: the count divided by the step duration in seconds."""
    return spikes_per_step * (MS_PER_S / dt_ms)


def whole_steps(key: str, what: str, duration_ms: float, dt_ms: float) -> int:
    """``duration_ms`` as a number of steps; a duration shorter than one step or between two step counts is a
    :class:`ConfigError` on ``key`` (rounding it would silently change the task)."""
    if duration_ms < dt_ms * (1.0 - WHOLE_STEPS_TOLERANCE):
        raise ConfigError(key, f"{what} of {duration_ms:g} ms is shorter than one {dt_ms:g}-ms step")
    steps = round(duration_ms / dt_ms)
    if not math.isclose(steps * dt_ms, duration_ms, rel_tol=WHOLE_STEPS_TOLERANCE):
        raise ConfigError(key, f"{what} of {duration_ms:g} ms is not a whole number of {dt_ms:g}-ms steps")
    return steps
