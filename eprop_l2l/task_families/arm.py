"""The two-joint arm of e-prop 2 (Bellec et al. 2019; the authors' ``robot_trajectories.py``; docs/equations.md).

Kinematics (differentiable, purely kinematic, segments 0.5 + 0.5, δt the family's step ``dt_ms``, given by
the run)::

    φ(t) = φ(0) + δt Σ_{t'≤t} ω(t'),   φ(0) = (0, π/2),   joint 2 is the RELATIVE elbow angle
    x = l1 cos φ1 + l2 cos(φ1 + φ2),   y = l1 sin φ1 + l2 sin(φ1 + φ2)          (start: (0.5, 0.5))

Target family ``ArmSines`` (B4): per task, with t = linspace(0, 2π, T) over the trial (T steps of δt),

* shoulder: ω1 = Σ_{k=1..5} A_k sin(t/P_k + Φ_k), A ~ U[0, 30] rad/s, P ~ U[0.3, 1], Φ ~ U[0, 2π], scaled down
  (if needed) so that the angle travelled stays within ±π/2;
* elbow: five components sin(t/P'_k + Φ'_k)·A'_k (A' ~ U[0, 1.5]), each normalised to a peak-to-peak of 20 rad/s,
  summed and scaled down the same way. The spec's "φ2_abs = φ1 + φ2_rel + π/2" is this relative joint with its
  start angle π/2.

Every trial's inputs: the learning network sees only the clock (``n_clock`` neurons in ``clock_groups`` groups;
group g fires one spike every ``clock_period_ms`` during the g-th fifth of the trial), identical for all tasks.
The error module additionally sees the target hand path, clipped to [−1, 1] and population-coded by
``n_pop_per_dim`` Gaussian-tuned Bernoulli neurons per coordinate (peak 200 Hz, σ = 0.2, centres
linspace(−1.4, 1.4)) — ``context``. ``targets`` are the target joint velocities (rad/s),
``extra["hand"]`` the target hand path. With ``context_code="binary"`` the target path is coded instead as
natural e-prop's planar arm codes it (Ortner et al. 2025): ``code_bits`` bits per coordinate, a bit that is 1
spiking at every step (:func:`~.brownian.binary_position_code`; deterministic, no generator draw).

Time: durations and rates are physical (ms, Hz, rad/s) and converted with the step ``dt_ms``: the clock period
becomes a whole number of steps (a step that does not divide it is refused, naming ``dt_ms``), the population
code fires with probability peak·δt per step, the kinematics integrate over δt. ``n_steps`` counts steps, so a
trial lasts ``n_steps``·δt. Every batch carries its step (``TaskBatch.dt_ms``) for whatever scores it.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError, require_choice, require_count, require_positive
from ..units import per_step, step_seconds, whole_steps
from .arm_figure import figure_one_shot
from .arm_kinematics import (  # noqa: F401 (the kinematics are part of this module's public names)
    PHI0,
    arm_forward,
    arm_path_gradient,
    hand_position,
    joint_angles,
    joint_velocities_from_hand,
)
from .arm_objective import arm_errors, arm_outer_loss
from .base import FamilyBase, TaskBatch, spike_probability
from .brownian import CONTEXT_CODES, binary_position_code, check_code_bits


def _limit_travel(omega: torch.Tensor, dt_ms: float, limit: float) -> torch.Tensor:
    """Scale each task's velocity down so that |angle travelled| ≤ limit (unchanged when already inside)."""
    travel = (step_seconds(dt_ms) * torch.cumsum(omega, -1)).abs().amax(-1, keepdim=True)
    return omega * torch.clamp(limit / travel.clamp_min(1e-12), max=1.0)


def clock_input(n_steps: int, n_clock: int, groups: int, period: int, dtype=torch.float32) -> torch.Tensor:
    """``[T, n_clock]``: group g (n_clock/groups neurons) spikes every ``period`` steps in the g-th segment."""
    clock = torch.zeros(n_steps, n_clock, dtype=dtype)
    per_group = n_clock // groups
    for g in range(groups):
        start, stop = g * n_steps // groups, (g + 1) * n_steps // groups
        clock[start:stop:period, g * per_group : (g + 1) * per_group] = 1.0
    return clock


def population_rates(xy: torch.Tensor, n_per_dim: int = 100, peak_hz: float = 200.0, sigma: float = 0.2,
                     span: float = 1.4, *, dt_ms: float) -> torch.Tensor:
    """Spike probability per step ``[..., T, 2·n_per_dim]`` of Gaussian-tuned neurons coding each coordinate
    (centres linspace(−span, span), the coordinate clipped to [−1, 1]); differentiable in ``xy``."""
    centres = torch.linspace(-span, span, n_per_dim, dtype=xy.dtype, device=xy.device)
    value = xy.clamp(-1.0, 1.0).unsqueeze(-1)  # [..., T, 2, 1]
    return (per_step(peak_hz, dt_ms) * torch.exp(-((value - centres) ** 2) / (2 * sigma**2))).flatten(-2)


# time steps (rows of xy) the population code draws at a time on a CPU generator: the chunk's float64 temporaries
# (~3 MB) stay in cache, where one pass over a whole [B, T, 2·n_per_dim] batch streams several of them through
# memory (at the paper's 100 tasks × 1,000 steps the pass took ~4× as long)
CODE_CHUNK_ROWS = 2048


def population_code(xy: torch.Tensor, generator: torch.Generator, n_per_dim: int = 100, peak_hz: float = 200.0,
                    sigma: float = 0.2, span: float = 1.4, *, dt_ms: float, tasks: slice | None = None) -> torch.Tensor:
    """Bernoulli spikes ``[..., T, 2·n_per_dim]`` drawn with :func:`population_rates` (in float64). A CPU
    generator's stream is sequential, so drawing it chunk by chunk gives the draws of one call, bit for bit.
    ``tasks`` (a slice of ``xy [B, T, 2]``'s first axis): the code of those tasks alone, the generator advanced
    as by all of them; only the chunks that hold them are coded."""
    xy64 = xy.to(torch.float64)
    if generator.device.type != "cpu":  # a device generator's draws depend on how they are split into calls
        p = population_rates(xy64, n_per_dim, peak_hz, sigma, span, dt_ms=dt_ms)
        code = (torch.rand(p.shape, generator=generator, dtype=torch.float64, device=generator.device) < p)
        return code.to(xy.dtype) if tasks is None else code[tasks].to(xy.dtype)
    rows = xy64.reshape(-1, 2)
    shape = xy.shape[:-1]
    kept = range(rows.shape[0])  # rows of the flattened [B·T, 2] to code
    if tasks is not None:
        first, stop, _ = tasks.indices(xy.shape[0])
        per_task = rows.shape[0] // xy.shape[0]
        kept, shape = range(first * per_task, max(first, stop) * per_task), (max(0, stop - first), *shape[1:])
    code = torch.empty(len(kept), 2 * n_per_dim, dtype=xy.dtype, device=xy.device)
    for start in range(0, rows.shape[0], CODE_CHUNK_ROWS):
        end = min(start + CODE_CHUNK_ROWS, rows.shape[0])
        draws = torch.rand((end - start, 2 * n_per_dim), generator=generator, dtype=torch.float64)
        lo, hi = max(start, kept.start), min(end, kept.stop)
        if lo < hi:  # this chunk holds kept rows
            p = population_rates(rows[lo:hi], n_per_dim, peak_hz, sigma, span, dt_ms=dt_ms)
            code[lo - kept.start : hi - kept.start] = draws[lo - start : hi - start] < p
    return code.reshape(*shape, 2 * n_per_dim)


@dataclass(frozen=True)
class ArmPlant:
    """The arm as an inner rule sees it (``inner_loop.objectives``, a learned module's produced-path input): what
    the learner's joint velocities ``y [..., T, 2]`` do to the hand, at the family's step ``dt_ms`` and with its
    population code (or binary code, ``code_bits`` per coordinate). ``target_key`` names the target hand path in
    ``TaskBatch.extra``."""

    dt_ms: float
    n_pop_per_dim: int
    peak_hz: float
    sigma: float
    _: KW_ONLY
    context_code: str  # the family's (ArmTrials.context_code)
    code_bits: int

    target_key: ClassVar[str] = "hand"

    def path(self, y: torch.Tensor) -> torch.Tensor:
        """The produced hand path ``[..., T, 2]``."""
        return arm_forward(y, dt_ms=self.dt_ms)

    def path_gradient(self, y: torch.Tensor, deviation: torch.Tensor) -> torch.Tensor:
        """∂E/∂y of a hand-path loss with ∂E/∂p = ``deviation`` (the Jacobian's transpose, integrated)."""
        return arm_path_gradient(y, deviation, dt_ms=self.dt_ms)

    def code(self, path: torch.Tensor) -> torch.Tensor:
        """Spike probabilities per step ``[..., T, n_context]`` of the family's code of ``path``: the same code as
        the target path's in the context, the population code as a rate (deterministic, differentiable); the
        binary code as it is (a step function of the path: no gradient flows through it)."""
        if self.context_code == "binary":
            return binary_position_code(path, self.code_bits)
        return population_rates(path, self.n_pop_per_dim, self.peak_hz, self.sigma, dt_ms=self.dt_ms)

    @property
    def n_code(self) -> int:
        return 2 * (self.code_bits if self.context_code == "binary" else self.n_pop_per_dim)


@dataclass(frozen=True)
class ArmTrials(FamilyBase):
    """What both arm families share: the trial's fields, trials built from ``joint_velocities`` (clock input,
    arm, coded target), and what the meta-learning loop asks of a family (``task_families.base.MetaObjective``):
    the outer objective, the per-task evaluation metrics and the one-shot figure."""

    n_steps: int = 500
    n_clock: int = 10
    clock_groups: int = 5
    clock_period_ms: int = 10
    n_pop_per_dim: int = 100
    pop_sigma: float = 0.2
    pop_peak_hz: float = 200.0
    # how the error module sees the target path: "population" (e-prop 2's Gaussian-tuned rates) or "binary"
    # (natural e-prop's position code, code_bits per coordinate)
    context_code: str = "population"
    code_bits: int = 16
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): n_steps·dt_ms is the trial

    metric_keys: ClassVar[tuple[str, ...]] = ("mse_cart", "mse_motor", "hand_rmse")
    primary_metric: ClassVar[str] = "mse_cart"  # the held-out number; the figure's example is its median task

    def outer_loss(self, y: torch.Tensor, batch: TaskBatch):
        """0.5·(0.1·MSE_motor + MSE_cart) of the test trial (``arm_objective``)."""
        return arm_outer_loss(y, batch)

    def errors(self, y: torch.Tensor, batch: TaskBatch) -> dict[str, torch.Tensor]:
        """Per-task MSE_cart, MSE_motor and RMS hand error ``[B]``."""
        return arm_errors(y, batch)

    @property
    def plant(self):
        """The arm as an inner rule's plant (``arm_objective.ArmPlant``): the hand path the learner's output
        produces, its Jacobian, and the population code of a hand path."""
        return ArmPlant(self.dt_ms, self.n_pop_per_dim, self.pop_peak_hz, self.pop_sigma,
                        context_code=self.context_code, code_bits=self.code_bits)

    def one_shot_figure(self, path, batch: TaskBatch, out: dict, per_task: dict | None = None,
                        index: int | None = None) -> dict:
        """The arm's one-shot figure (``arm_figure``); returns the data behind its panels."""
        return figure_one_shot(path, batch, out, per_task=per_task, index=index)

    @property
    def n_in(self) -> int:
        return self.n_clock

    @property
    def n_context(self) -> int:
        return self.plant.n_code

    @property
    def clock_period_steps(self) -> int:
        # a step that does not divide the period is refused on dt_ms: rounding would change the clock's rhythm
        return whole_steps(f"{self.name}.dt_ms", "the clock period", self.clock_period_ms, self.dt_ms)

    def _check_arm_fields(self):
        for key in ("n_steps", "n_clock", "clock_groups", "clock_period_ms", "n_pop_per_dim"):
            require_count(f"{self.name}.{key}", getattr(self, key))
        for key in ("pop_sigma", "pop_peak_hz", "dt_ms"):
            require_positive(f"{self.name}.{key}", getattr(self, key))
        if self.n_clock % self.clock_groups:
            raise ConfigError(f"{self.name}.n_clock", f"must be a multiple of clock_groups={self.clock_groups}")
        if self.n_steps < self.clock_groups:
            raise ConfigError(f"{self.name}.n_steps", f"must be >= clock_groups={self.clock_groups}")
        self.clock_period_steps  # noqa: B018 (validates the step against the clock period)
        spike_probability(f"{self.name}.dt_ms", self.pop_peak_hz, self.dt_ms, "the population code's peak rate")
        require_choice(f"{self.name}.context_code", self.context_code, CONTEXT_CODES)
        check_code_bits(f"{self.name}.code_bits", self.code_bits)

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        return self.sample_rows(batch_size, generator, slice(None), dtype)

    def sample_rows(self, batch_size: int, generator: torch.Generator, rows: slice,
                    dtype: torch.dtype = torch.float32) -> TaskBatch:
        # the population code is most of a draw's cost: only these tasks' is computed
        self._check_batch_size(batch_size)
        return self.trials(self.joint_velocities(batch_size, generator), generator, dtype, tasks=rows)

    def trials(self, omega: torch.Tensor, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               tasks: slice | None = None) -> TaskBatch:
        """The trials of given target joint velocities ``omega [B, n_steps, 2]`` (rad/s): the clock input, the
        arm's angles and hand path, and the population-coded hand path for the error module (drawn from
        ``generator``). :meth:`sample` is ``trials(joint_velocities(...))``; a user's own movement goes here.
        ``tasks``: those trials alone, the generator advanced as by all of them."""
        if omega.dim() != 3 or omega.shape[1:] != (self.n_steps, 2):
            raise ConfigError(f"{self.name}.joint_velocities", f"must have shape [B, {self.n_steps}, 2], got "
                              f"{list(omega.shape)}")
        angles = joint_angles(omega, dt_ms=self.dt_ms)
        hand = every_hand = hand_position(angles)  # the population code draws for every task of the batch
        if tasks is not None:
            omega, angles, hand = omega[tasks], angles[tasks], every_hand[tasks]
        if self.context_code == "binary":
            context = binary_position_code(hand, self.code_bits)
        else:
            context = population_code(every_hand, generator, self.n_pop_per_dim, self.pop_peak_hz, self.pop_sigma,
                                      dt_ms=self.dt_ms, tasks=tasks)
        batch_size = omega.shape[0]
        clock = clock_input(self.n_steps, self.n_clock, self.clock_groups, self.clock_period_steps)
        clock = clock.to(generator.device).expand(batch_size, -1, -1)
        mask = torch.ones(batch_size, self.n_steps, dtype=dtype, device=generator.device)
        return TaskBatch(clock.to(dtype).contiguous(), omega.to(dtype), mask,
                         {"hand": hand.to(dtype), "angles": angles.to(dtype)},
                         dt_ms=self.dt_ms, context=context.to(dtype))


@dataclass(frozen=True)
class ArmSines(ArmTrials):
    n_components: int = 5
    shoulder_amplitude: float = 30.0
    elbow_peak_to_peak: float = 20.0

    name: ClassVar[str] = "arm_sines"
    loss: ClassVar[str] = "mse"
    n_out: ClassVar[int] = 2

    def __post_init__(self):
        self._check_arm_fields()
        require_count(f"{self.name}.n_components", self.n_components)
        for key in ("shoulder_amplitude", "elbow_peak_to_peak"):
            require_positive(f"{self.name}.{key}", getattr(self, key))

    def joint_velocities(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Target ω* ``[B, T, 2]`` (float64), drawn from ``generator``."""
        k, dev = self.n_components, generator.device
        # t spans the trial whatever the step: the same draws at another step and the same trial duration give
        # the same movement, sampled on another grid (the draws do not depend on n_steps)
        t = torch.linspace(0, 2 * math.pi, self.n_steps, dtype=torch.float64, device=dev)

        def uniform(low, high):
            return low + (high - low) * torch.rand(batch_size, k, 1, generator=generator, dtype=torch.float64,
                                                   device=dev)

        amp, period, phase = uniform(0, self.shoulder_amplitude), uniform(0.3, 1.0), uniform(0, 2 * math.pi)
        shoulder = (amp * torch.sin(t / period + phase)).sum(1)
        amp2, period2, phase2 = uniform(0, 1.5), uniform(0.3, 1.0), uniform(0, 2 * math.pi)
        parts = amp2 * torch.sin(t / period2 + phase2)
        span = (parts.amax(-1, keepdim=True) - parts.amin(-1, keepdim=True)).clamp_min(1e-12)
        elbow = (parts / span * self.elbow_peak_to_peak).sum(1)
        limit = math.pi / 2
        return torch.stack([_limit_travel(shoulder, self.dt_ms, limit), _limit_travel(elbow, self.dt_ms, limit)], -1)


@dataclass(frozen=True)
class ArmBrownian(ArmTrials):
    """Natural e-prop's target family (Ortner et al. 2025 code): each joint velocity is a Wiener process
    (increments N(0, δ²·0.01) per 1-ms step), smoothed by a normalised Hann window of ``window`` ms (zero-padded
    at the start, so causal) and clipped to ±``clip``. The authors' kinematics advance the angle by 0.01·ω per
    step; here ω is returned in rad/s for 1-ms steps (×``0.01/1 ms``), which gives the same angles, and each
    task is then scaled down (if needed) so that the angle travelled stays within ±``max_travel``, as in
    :class:`ArmSines` (their 250-step trials are 500 here).

    The recipe's step is a 1-ms step (``RECIPE_STEP_MS``); at another step ``dt_ms`` the process is the same in
    physical time: increments of variance ∝ δt (N(0, δ²·0.01·δt/1 ms)), a window of ``window`` ms (a whole
    number of steps), the same ω in rad/s."""

    delta: float = 1.0  # δ: 1.0 for the 2-joint arm, 0.65 for the Scorbot in the authors' code
    window: int = 120  # ms (steps of the recipe's 1-ms grid)
    clip: float = math.pi
    kinematic_step: float = 0.01  # the authors' angle increment per (1-ms) step per unit ω
    max_travel: float = math.pi / 2

    name: ClassVar[str] = "arm_brownian"
    loss: ClassVar[str] = "mse"
    n_out: ClassVar[int] = 2
    RECIPE_STEP_MS: ClassVar[float] = 1.0

    def __post_init__(self):
        self._check_arm_fields()
        require_count(f"{self.name}.window", self.window)
        for key in ("delta", "clip", "kinematic_step", "max_travel"):
            require_positive(f"{self.name}.{key}", getattr(self, key))
        self.window_steps  # noqa: B018 (validates the step against the window)

    @property
    def window_steps(self) -> int:
        return whole_steps(f"{self.name}.dt_ms", "the Hann window", self.window, self.dt_ms)

    def joint_velocities(self, batch_size: int, generator: torch.Generator) -> torch.Tensor:
        """Target ω* ``[B, T, 2]`` (float64, rad/s), drawn from ``generator``."""
        dev, window = generator.device, self.window_steps
        steps = torch.randn(batch_size * 2, 1, self.n_steps, generator=generator, dtype=torch.float64, device=dev)
        # a Wiener process: the variance of an increment is proportional to the step (factor 1 at 1 ms)
        wiener = torch.cumsum(self.delta * 0.1 * math.sqrt(self.dt_ms / self.RECIPE_STEP_MS) * steps, -1)
        hann = torch.hann_window(window, periodic=False, dtype=torch.float64, device=dev)
        smooth = torch.nn.functional.conv1d(torch.nn.functional.pad(wiener, (window - 1, 0)),
                                            (hann / hann.sum()).flip(-1).reshape(1, 1, -1))
        omega = smooth.clamp(-self.clip, self.clip).reshape(batch_size, 2, self.n_steps)
        # the recipe's angle increment per 1-ms step, as a velocity in rad/s (independent of our step)
        velocity = self.kinematic_step / step_seconds(self.RECIPE_STEP_MS)
        omega = _limit_travel(omega * velocity, self.dt_ms, self.max_travel)
        return omega.transpose(1, 2).contiguous()
