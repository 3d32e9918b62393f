"""The two-joint arm family: kinematics pinned by hand values, reproduces its own targets, statistics of the
authors' generator (docs/equations.md), clock and population code as specified."""

import math

import pytest
import torch

from eprop_l2l.errors import ConfigError
from eprop_l2l.task_families import make_task_family
from eprop_l2l.task_families.arm import (
    CODE_CHUNK_ROWS,
    ArmSines,
    arm_forward,
    hand_position,
    joint_angles,
    population_code,
    population_rates,
)


def test_hand_position_by_hand():
    phi = torch.tensor([[0.0, 0.0], [math.pi / 2, 0.0], [0.0, math.pi], [0.0, math.pi / 2]], dtype=torch.float64)
    expected = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0], [0.5, 0.5]], dtype=torch.float64)
    assert torch.allclose(hand_position(phi), expected, atol=1e-15)


def test_kinematics_reproduce_the_target_path_and_are_differentiable():
    batch = ArmSines(n_steps=300, dt_ms=1.0).sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
    assert (arm_forward(batch.targets, dt_ms=1.0) - batch.extra["hand"]).abs().max() <= 1e-10
    assert torch.allclose(batch.extra["hand"][:, 0], torch.tensor([0.5, 0.5], dtype=torch.float64), atol=0.05)
    omega = torch.randn(2, 6, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w: arm_forward(w, dt_ms=50.0), (omega,))
    assert torch.allclose(joint_angles(torch.zeros(1, 3, 2, dtype=torch.float64), dt_ms=1.0)[0, -1],
                          torch.tensor([0.0, math.pi / 2], dtype=torch.float64))


def test_statistics_match_the_authors_generator():
    omega = ArmSines(dt_ms=1.0).joint_velocities(1000, torch.Generator().manual_seed(0))
    angles = joint_angles(omega, dt_ms=1.0)
    hand = hand_position(angles)
    assert omega[..., 0].pow(2).mean().sqrt().item() == pytest.approx(13.3, rel=0.1)
    assert omega[..., 1].pow(2).mean().sqrt().item() == pytest.approx(12.1, rel=0.1)
    travel = (angles - torch.tensor([0.0, math.pi / 2], dtype=torch.float64)).abs()
    assert travel.max() <= math.pi / 2 + 0.05  # |φ_rel| ≤ π/2 (up to the first step)
    displacement = (hand - torch.tensor([0.5, 0.5], dtype=torch.float64)).norm(dim=-1).amax(1)
    assert displacement.median().item() == pytest.approx(0.98, abs=0.1)
    zero_output_mse_cart = ((arm_forward(torch.zeros_like(omega), dt_ms=1.0) - hand) ** 2).mean().item()
    assert zero_output_mse_cart == pytest.approx(0.205, abs=0.02)  # a motionless arm (docs/results.md)


def test_clock_population_code_and_reproducibility():
    family = ArmSines(n_steps=500, dt_ms=1.0)
    a = family.sample(3, torch.Generator().manual_seed(5))
    b = family.sample(3, torch.Generator().manual_seed(5))
    c = family.sample(3, torch.Generator().manual_seed(6))
    assert torch.equal(a.targets, b.targets) and torch.equal(a.context,
                                                             b.context)
    assert not torch.equal(a.targets, c.targets)
    clock = a.inputs[0]
    assert clock.shape == (500, 10) and torch.equal(a.inputs[0], a.inputs[2])
    for g in range(5):
        spikes = torch.nonzero(clock[:, 2 * g]).flatten()
        assert torch.equal(spikes, torch.arange(100 * g, 100 * (g + 1), 10))
        assert torch.equal(clock[:, 2 * g], clock[:, 2 * g + 1])
    # population code: a coordinate held at 0.3 drives the neuron centred nearest 0.3 at ≈ 200 Hz
    xy = torch.full((20000, 2), 0.3, dtype=torch.float64)
    code = population_code(xy, torch.Generator().manual_seed(0), dt_ms=1.0)
    rates = code.mean(0) * 1000
    centres = torch.linspace(-1.4, 1.4, 100, dtype=torch.float64)
    nearest = (centres - 0.3).abs().argmin()
    expected_peak = 200 * math.exp(-((centres[nearest] - 0.3) ** 2) / (2 * 0.2**2))
    assert rates[nearest].item() == pytest.approx(expected_peak, rel=0.08)
    assert rates[:10].max() < 1.0  # centres far below 0.3 stay silent


def test_the_population_code_drawn_in_chunks_equals_one_draw_of_the_whole_batch():
    """The chunked draw (CODE_CHUNK_ROWS time steps at a time) is the one-pass code, bit for bit, across chunk
    boundaries: every committed run's held-out movements depend on it."""
    xy = torch.rand(3, 1500, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2.4 - 1.2
    assert xy[..., 0].numel() > 2 * CODE_CHUNK_ROWS
    p = population_rates(xy, dt_ms=1.0)
    one_pass = torch.rand(p.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64) < p
    code = population_code(xy.float(), torch.Generator().manual_seed(7), dt_ms=1.0)
    assert code.dtype == torch.float32 and code.shape == (3, 1500, 200)
    assert torch.equal(code, one_pass.float()) and 0.001 < code.mean() < 0.1


@pytest.mark.parametrize("fields,key", [({"n_steps": 0}, "arm_sines.n_steps"),
                                        ({"pop_sigma": -0.2}, "arm_sines.pop_sigma"),
                                        ({"n_clock": 7}, "arm_sines.n_clock"),
                                        ({"speed": 2}, "arm_sines.speed")])
def test_bad_fields(fields, key):
    with pytest.raises(ConfigError, match=f"^{key}: "):
        make_task_family("arm_sines", **{"dt_ms": 1.0, **fields})
