"""The natural e-prop arm family ``ArmBrownian`` (Scherr et al. 2020): the target joint velocities follow
the documented recipe (Wiener process, causal Hann window of 120 steps, clip, ×10 to rad/s, travel ≤ π/2), their
statistics match the calibration numbers (motionless arm MSE_cart ≈ 0.148, velocity RMS ≈ 4.57 rad/s), the stored
hand path is the arm's forward kinematics, bad fields raise ``ConfigError``, and the demonstration and test trial of
the meta-learner are scored against the same target, whose population code has the documented shape."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.base import SignalSource
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.meta.learner import MetaLearner
from eprop_l2l.task_families import ArmBrownian, TaskBatch, make_task_family
from eprop_l2l.task_families.arm import PHI0, arm_forward, joint_angles
from eprop_l2l.task_families.arm_objective import arm_errors, arm_outer_loss

N_STATS_TASKS = 256
STATS_SEED = 0


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def travel(angles: torch.Tensor) -> torch.Tensor:
    """Angle travelled by each joint relative to the start posture ``[..., T, 2]``."""
    return angles - torch.tensor(PHI0, dtype=angles.dtype)


@pytest.fixture(scope="module")
def stats_batch() -> TaskBatch:
    """256 tasks of the default family (500 steps), float64, from a fixed seed: sampled once for the module."""
    return ArmBrownian(dt_ms=1.0).sample(N_STATS_TASKS, gen(STATS_SEED), dtype=torch.float64)


# ------------------------------------------------------------------------------------------------ reproducibility


def test_same_seed_gives_identical_tensors_and_different_seeds_different_targets():
    family = ArmBrownian(n_steps=300, n_pop_per_dim=20, dt_ms=1.0)
    a, b, c = family.sample(8, gen(11)), family.sample(8, gen(11)), family.sample(8, gen(12))
    assert set(a.extra) == {"hand", "angles"} and a.context is not None
    for x, y in [(a.inputs, b.inputs), (a.targets, b.targets), (a.mask, b.mask)] + \
            [(a.extra[k], b.extra[k]) for k in a.extra]:
        assert x.dtype == y.dtype and torch.equal(x, y)
    # another seed: other movements (every task and joint differs), other context spikes, the same clock
    assert (a.targets - c.targets).abs().amax(1).min() > 0.1
    assert not torch.equal(a.context, c.context)
    assert torch.equal(a.inputs, c.inputs) and torch.equal(a.mask, c.mask)
    # tasks within one batch and the two joints of one task are independent draws
    assert (a.targets[1:] - a.targets[:1]).abs().amax((1, 2)).min() > 0.1
    assert (a.targets[..., 0] - a.targets[..., 1]).abs().amax(1).min() > 0.1


def test_velocities_follow_the_documented_recipe():
    """Independent NumPy re-implementation on the same normal draws: Wiener increments N(0, (0.1 δ)²), causal
    normalised Hann window (symmetric, 120 steps), clip ±π, ×0.01/δt to rad/s, travel scaled down to ≤ π/2.
    δ = 2 makes the clip bite within 400 steps."""
    family = ArmBrownian(n_steps=400, delta=2.0, dt_ms=1.0)
    batch, t = 6, family.n_steps
    omega = family.joint_velocities(batch, gen(7))
    assert omega.shape == (batch, t, 2) and omega.dtype == torch.float64
    noise = torch.randn(batch * 2, 1, t, generator=gen(7), dtype=torch.float64).numpy().reshape(batch, 2, t)
    wiener = np.cumsum(0.1 * 2.0 * noise, -1)
    hann = np.hanning(120)
    hann /= hann.sum()
    expected, clipped = np.empty((batch, t, 2)), 0
    for b in range(batch):
        for j in range(2):
            smooth = np.convolve(wiener[b, j], hann)[:t]  # causal: step t sees the Wiener process up to t
            clipped += int((np.abs(smooth) > math.pi).sum())
            w = np.clip(smooth, -math.pi, math.pi) * 10.0
            reach = np.abs(1e-3 * np.cumsum(w)).max()
            expected[b, :, j] = w * min(1.0, (math.pi / 2) / reach)
    assert clipped > 50  # the clip is exercised
    np.testing.assert_allclose(omega.numpy(), expected, rtol=0, atol=1e-11)
    assert torch.all(omega[:, 0] == 0)  # the Hann window's end weight is 0: every movement starts at rest


# ------------------------------------------------------------------------------------------------ statistics


def test_joint_travel_stays_within_a_quarter_turn(stats_batch):
    angles = stats_batch.extra["angles"]
    reach = travel(angles).abs().amax(1)  # [tasks, 2]
    assert reach.max().item() <= math.pi / 2 + 1e-9
    # the limit is active: most movements are scaled down to touch it exactly (measured 0.83 of them)
    assert ((reach - math.pi / 2).abs() < 1e-9).double().mean().item() == pytest.approx(0.83, abs=0.1)
    # ... and the angles are those of the velocities (float64 cumulative sum, δt = 1 ms)
    assert (joint_angles(stats_batch.targets, dt_ms=1.0) - angles).abs().max().item() <= 1e-12


def test_velocity_rms_and_clip(stats_batch):
    omega = stats_batch.targets
    rms = omega.pow(2).mean().sqrt().item()  # measured 4.51 (seed 0); documented 4.57 rad/s
    assert rms == pytest.approx(4.57, rel=0.1)
    for joint in range(2):  # both joints are drawn alike (measured 4.47, 4.54)
        assert omega[..., joint].pow(2).mean().sqrt().item() == pytest.approx(4.57, rel=0.1)
    assert omega.abs().max().item() <= 10 * math.pi + 1e-12  # clip ±π of the authors' units, ×10 → rad/s
    assert omega.abs().max().item() > 20.0  # ... and the movements do get fast (measured 29.3)


def test_motionless_arm_mse_cart(stats_batch):
    still = torch.zeros_like(stats_batch.targets)
    mse_cart = arm_errors(still, stats_batch)["mse_cart"].mean().item()  # measured 0.1521 (seed 0)
    assert mse_cart == pytest.approx(0.148, rel=0.1)


def test_velocities_are_smooth(stats_batch):
    omega = stats_batch.targets
    d2 = omega.diff(n=2, dim=1).abs().mean().item()  # measured 1.22e-3 rad/s
    # the same values in a random temporal order (white noise with the same amplitude distribution)
    shuffled = omega[:, torch.randperm(omega.shape[1], generator=gen(1))]
    d2_white = shuffled.diff(n=2, dim=1).abs().mean().item()  # measured 6.2 rad/s
    assert d2 < 1e-3 * d2_white
    # the 120-step window sets the curvature: a 60- or 240-step window gives 3.5e-3 or 0.45e-3
    assert d2 == pytest.approx(1.28e-3, rel=0.3)


def test_consecutive_steps_are_correlated(stats_batch):
    omega = stats_batch.targets.transpose(1, 2).reshape(-1, stats_batch.n_steps)  # one row per task and joint
    x, y = omega[:, :-1], omega[:, 1:]
    x, y = x - x.mean(1, keepdim=True), y - y.mean(1, keepdim=True)
    corr = (x * y).sum(1) / (x.norm(dim=1) * y.norm(dim=1))
    assert corr.min().item() > 0.95  # every single movement (measured min 0.9995)
    assert corr.mean().item() > 0.999


# ------------------------------------------------------------------------------------------------ kinematics


def test_target_hand_path_is_the_forward_kinematics_of_the_target_velocities():
    family = ArmBrownian(n_steps=500, n_pop_per_dim=10, dt_ms=1.0)
    batch = family.sample(32, gen(3), dtype=torch.float64)
    hand = batch.extra["hand"]
    assert hand.shape == (32, 500, 2) and hand.dtype == torch.float64
    assert (arm_forward(batch.targets, dt_ms=1.0) - hand).abs().max().item() <= 1e-10
    # the movement starts at rest in the start posture, hand at (0.5, 0.5), and does move away from it
    start = torch.tensor([0.5, 0.5], dtype=torch.float64)
    assert (hand[:, 0] - start).abs().max().item() <= 1e-12
    assert (hand - start).norm(dim=-1).amax(1).median().item() > 0.3
    # float32 trials carry the same movements, rounded
    single = family.sample(32, gen(3), dtype=torch.float32)
    assert single.targets.dtype == single.extra["hand"].dtype == torch.float32
    assert (single.extra["hand"].double() - hand).abs().max().item() <= 1e-6


# ------------------------------------------------------------------------------------------------ error paths


@pytest.mark.parametrize(
    ("fields", "key"),
    [
        ({"n_steps": 0}, "n_steps"),
        ({"n_steps": 3}, "n_steps"),  # fewer steps than clock groups
        ({"window": 0}, "window"),
        ({"window": -120}, "window"),
        ({"window": 12.5}, "window"),
        ({"delta": -1.0}, "delta"),
        ({"delta": 0.0}, "delta"),
        ({"delta": float("nan")}, "delta"),
        ({"clip": -math.pi}, "clip"),
        ({"kinematic_step": -0.01}, "kinematic_step"),
        ({"max_travel": -1.0}, "max_travel"),
        ({"max_travel": float("inf")}, "max_travel"),
        ({"dt_ms": 0.0}, "dt_ms"),
        ({"n_pop_per_dim": -3}, "n_pop_per_dim"),
        ({"pop_sigma": -0.2}, "pop_sigma"),
        ({"pop_peak_hz": 0.0}, "pop_peak_hz"),
        ({"n_clock": 7}, "n_clock"),
        ({"clock_period_ms": 0}, "clock_period_ms"),
        ({"context_code": "gray"}, "context_code"),
        ({"code_bits": 0}, "code_bits"),
        ({"code_bits": 31}, "code_bits"),
    ],
)
def test_bad_fields_raise_config_error_naming_the_field(fields, key):
    fields = {"dt_ms": 1.0, **fields}
    for build in (lambda: ArmBrownian(**fields), lambda: make_task_family("arm_brownian", **fields)):
        with pytest.raises(ConfigError) as info:
            build()
        message = str(info.value)
        assert info.value.key == f"arm_brownian.{key}"
        assert message.startswith(f"arm_brownian.{key}: ") and "\n" not in message


def test_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match=r"^arm_brownian\.sigma: unknown field \(choose from [a-z_, ]*window"):
        make_task_family("arm_brownian", sigma=0.1, dt_ms=1.0)


# --------------------------------------------------------------------------- demonstration, test trial, context


class RecordingSource(SignalSource):
    """Symmetric feedback that remembers what it observed in each demonstration trial."""

    def __init__(self, n_rec: int):
        self.inner = Feedback("symmetric", n_rec, 2)
        self.seen = []

    def run(self, params, obs):
        self.seen.append(obs)
        return self.inner.run(params, obs)


def test_demonstration_and_test_trial_share_the_target():
    family = ArmBrownian(n_steps=120, n_pop_per_dim=6, dt_ms=1.0)
    batch = family.sample(3, gen(4), dtype=torch.float64)
    source = RecordingSource(n_rec=12)
    scored = []

    def outer_loss(y, trial):
        scored.append(trial)
        return arm_outer_loss(y, trial)

    network = RecurrentNetwork(LIF(family.n_in, 12, v_th=0.3, n_ref=2, dt_ms=1.0), LeakyReadout(12, 2, dt_ms=1.0))
    learner = MetaLearner(network, source, inner_lr=0.05, outer_loss=outer_loss, fast_loop=False)
    meta = learner.init_meta_params(gen(0), torch.float64)
    meta["network"]["w_in"] = meta["network"]["w_in"] * 3.0
    meta["network"]["w_out"] = meta["network"]["w_out"] * 50.0
    out = learner.forward(meta, batch)
    # the demonstration's learning signals saw the task's target velocities and its coded target hand path
    (demo,) = source.seen
    assert torch.equal(demo.target, batch.targets)
    assert torch.equal(demo.context, batch.context)
    # the test trial (and the re-scored demonstration) are scored against the same task
    assert len(scored) == 2 and all(trial is batch for trial in scored)
    after, before = arm_errors(out["y_test"], batch), arm_errors(out["y_demo"], batch)
    metrics = out["metrics"]
    for key in ("mse_cart", "mse_motor"):
        torch.testing.assert_close(metrics[f"{key}_after"], after[key].mean(), rtol=1e-12, atol=0)
        torch.testing.assert_close(metrics[f"{key}_before"], before[key].mean(), rtol=1e-12, atol=0)
    # the update did change the test trial, so the equalities above are not the same number twice
    assert (out["y_test"] - out["y_demo"]).abs().max().item() > 1e-6
    assert not torch.equal(metrics["mse_cart_after"], metrics["mse_cart_before"])


def test_error_module_context_is_the_documented_population_code():
    family = ArmBrownian(dt_ms=1.0)
    assert (family.n_in, family.n_out, family.n_context, family.loss) == (10, 2, 200, "mse")
    batch = family.sample(16, gen(5))
    context = batch.context
    assert context.shape == (16, 500, 2 * family.n_pop_per_dim) == (16, 500, family.n_context)
    assert context.dtype == torch.float32 and set(context.unique().tolist()) <= {0.0, 1.0}
    assert batch.inputs.shape == (16, 500, family.n_in) and batch.mask.shape == (16, 500)
    assert torch.all(batch.mask == 1)
    # neurons 0..99 code x, 100..199 code y of the target hand (Gaussian tuning, σ = 0.2, peak 200 Hz)
    hand = batch.extra["hand"].double().clamp(-1, 1)
    centres = torch.linspace(-1.4, 1.4, 100, dtype=torch.float64)
    p = 0.2 * torch.exp(-((hand.unsqueeze(-1) - centres) ** 2) / (2 * 0.2**2))  # [16, 500, 2, 100]
    p = p.flatten(-2)
    assert torch.all(context[p < 1e-9] == 0)  # a neuron tuned far from the target hand never fires
    expected = p.sum().item()  # ≈ 16 · 500 · 2 · 0.2 · √(2π)·0.2/0.028 ≈ 5.7e4 spikes (measured 56565)
    assert context.sum().item() == pytest.approx(expected, rel=0.03)
    for block in range(2):  # each coordinate block fires as its own coordinate predicts
        part = slice(100 * block, 100 * (block + 1))
        assert context[..., part].sum().item() == pytest.approx(p[..., part].sum().item(), rel=0.04)


def test_binary_context_is_natural_eprops_position_code_of_the_target_path():
    """``context_code="binary"``: per coordinate the ``code_bits`` low bits of ⌊(c + 1)·2^(bits−1)⌋ (least
    significant first, re-implemented here in NumPy), every step, no draw from the generator; the plant codes a
    produced path the same way, so the produced-path input has the target's width."""
    family = ArmBrownian(n_steps=150, context_code="binary", code_bits=12, dt_ms=1.0)
    assert family.n_context == family.plant.n_code == 24
    g = gen(6)
    batch = family.sample(4, g, dtype=torch.float64)
    hand = batch.extra["hand"].numpy()
    value = np.floor((hand + 1.0) * 2**11).astype(np.int64)  # [4, T, 2]
    bits = (value[..., None] >> np.arange(12)) & 1  # [4, T, 2, 12]
    np.testing.assert_array_equal(batch.context.numpy(), bits.reshape(4, 150, 24).astype(np.float64))
    # the velocities are drawn as with the population code; only the population code draws spikes afterwards
    population = ArmBrownian(n_steps=150, dt_ms=1.0)
    g_pop = gen(6)
    reference = population.sample(4, g_pop, dtype=torch.float64)
    torch.testing.assert_close(batch.targets, reference.targets, rtol=0, atol=0)
    only_velocities = gen(6)
    family.joint_velocities(4, only_velocities)
    assert torch.equal(g.get_state(), only_velocities.get_state())  # the binary code drew nothing
    torch.testing.assert_close(family.plant.code(batch.extra["hand"]), batch.context, rtol=0, atol=0)


def test_the_binary_code_is_chosen_by_the_config_and_sizes_the_module_input():
    from eprop_l2l.runs.build import from_experiment

    learner, family, _ = from_experiment("cpu", "task=arm_brownian", "error_module=natural",
                                         "task.context_code=binary", "task.code_bits=12")
    assert (family.context_code, family.code_bits, family.n_context) == ("binary", 12, 24)
    assert learner.error_module.cell.n_in == family.n_context + family.n_in  # code + clock, no learner spikes
    _, population, _ = from_experiment("cpu", "task=arm_brownian", "error_module=natural")
    assert population.n_context == 2 * population.n_pop_per_dim


@pytest.mark.parametrize("overrides, key", [
    (("task=scorbot_brownian", "task.context_code=binary"), "task.context_code"),
    (("task=arm_brownian", "task.context_code=gray"), "task.context_code"),
    (("task=arm_brownian", "task.context_code=binary", "task.code_bits=40"), "task.code_bits"),
])
def test_a_code_the_family_cannot_take_is_refused_naming_the_key(overrides, key):
    from eprop_l2l.runs.build import from_experiment

    with pytest.raises(ConfigError) as info:
        from_experiment("cpu", *overrides)
    assert info.value.key == key and "\n" not in str(info.value)
