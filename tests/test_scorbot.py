"""Natural e-prop's ED-Scorbot task (task_families/scorbot.py, brownian.py) against independent computations:

* the forward kinematics equal a chain of homogeneous transforms (NumPy) at random joint angles;
* the Brownian velocities equal the recipe re-implemented here in NumPy (random walk, periodic Hann window with
  zero front and mirrored back padding, centred, clipped), from the same normal draws;
* the binary position code equals the bits of ⌊(c + 1)·2^15⌋ (NumPy), and the clock is the recipe's;
* the learning-signal generator never receives the trainee's spikes (permuting them changes nothing), and
  its signal obeys L^t = e^{−δt/τ} L^{t−1} + Ψ ξ^t step by step;
* the metrics are in the paper's units (cm, rad/s) and the presets build with the published sizes.
"""

import math

import numpy as np
import pytest
import torch

from eprop_l2l.error_modules.base import Observation
from eprop_l2l.errors import ConfigError
from eprop_l2l.runs.build import from_experiment
from eprop_l2l.task_families import make_task_family
from eprop_l2l.task_families.brownian import binary_position_code, smoothed_brownian
from eprop_l2l.task_families.scorbot import scorbot_position


def rotation_z(angle):
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])


def rotation_y(angle):  # a positive angle about −y raises the link: the vertical plane's elevation
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, 0, -s, 0], [0, 1, 0, 0], [s, 0, c, 0], [0, 0, 0, 1.0]])


def translation(x, y, z):
    t = np.eye(4)
    t[:3, 3] = (x, y, z)
    return t


def chain_position(theta):
    """The end effector as the origin of the last frame of base rotation → offset → three elevated links."""
    base, shoulder, elbow, wrist = theta
    frame = rotation_z(-base) @ translation(0.05, -0.033, 0.3585)
    for angle, length in ((shoulder, 0.30), (elbow, 0.35), (wrist, 0.22)):
        frame = frame @ rotation_y(angle) @ translation(length, 0, 0)
    return frame[:3, 3]


def test_forward_kinematics_equal_homogeneous_transforms():
    rng = np.random.default_rng(0)
    theta = rng.uniform(-2.3, 2.3, size=(50, 4))
    got = scorbot_position(torch.tensor(theta)).numpy()
    expected = np.stack([chain_position(t) for t in theta])
    assert np.abs(got - expected).max() <= 1e-12
    # the start posture of the recipe: the stretched arm
    assert np.allclose(scorbot_position(torch.zeros(4, dtype=torch.float64)).numpy(), [0.92, -0.033, 0.3585])


def recipe_brownian(normals, delta, window, clip):
    """The recipe in NumPy: [batch·joints, T] normal draws → smoothed, clipped velocities."""
    raw = np.cumsum(delta * 0.1 * normals, -1)
    n = np.arange(window)
    w = 0.5 - 0.5 * np.cos(2 * np.pi * n / window)
    w = w / w.sum()
    out = np.empty_like(raw)
    steps = raw.shape[-1]
    for k in range(steps):
        acc = 0.0
        for m in range(window):
            i = k - window // 2 + 1 + m
            value = 0.0 if i < 0 else raw[:, i] if i < steps else raw[:, 2 * steps - 1 - i]
            acc = acc + w[m] * value
        out[:, k] = acc
    return np.clip(out, -clip, clip)


def test_brownian_velocities_equal_the_recipe():
    batch, joints, steps, window = 3, 2, 130, 120
    generator = torch.Generator().manual_seed(4)
    got = smoothed_brownian(batch, joints, steps, generator, delta=0.65, window=window, clip=0.2)
    normals = torch.randn(batch * joints, steps, generator=torch.Generator().manual_seed(4),
                          dtype=torch.float64).numpy()
    expected = recipe_brownian(normals, 0.65, window, 0.2).reshape(batch, joints, steps).transpose(0, 2, 1)
    assert np.abs(got.numpy() - expected).max() <= 1e-12
    assert (np.abs(expected) == 0.2).any()  # the clip acted: the comparison covers it


def test_position_code_is_the_recipes_binary_code():
    c = torch.tensor([[[0.92, -0.033, 0.3585], [-0.999, 0.5, 1.2]]], dtype=torch.float64)
    code = binary_position_code(c).numpy()
    assert code.shape == (1, 2, 48)
    for t in range(2):
        for axis in range(3):
            v = int((c[0, t, axis].item() + 1) * 2**15)
            assert code[0, t, 16 * axis:16 * (axis + 1)].tolist() == [(v >> b) & 1 for b in range(16)]
    # the start position codes as the recipe's (62914, 31686, 44515)
    start = code[0, 0].reshape(3, 16)
    assert [int(sum(bit << b for b, bit in enumerate(row.astype(int)))) for row in start] == [62914, 31686, 44515]


def test_trials_clock_targets_and_metrics():
    family = make_task_family("scorbot_brownian", dt_ms=1.0)
    batch = family.sample(4, torch.Generator().manual_seed(0))
    assert batch.inputs.shape == (4, 249, 5) and batch.context.shape == (4, 249, 48)
    spikes = [torch.nonzero(batch.inputs[0, :, n]).flatten().tolist() for n in range(5)]
    assert spikes == [[50 * n + 10 * k for k in range(5)] for n in range(5)]
    angles = batch.extra["angles"]
    assert (angles[..., 0].abs() <= math.radians(130) + 1e-6).all()
    assert (angles[..., 1].abs() <= math.radians(70) + 1e-6).all()
    unclipped = family.errors(batch.targets, batch)
    assert torch.allclose(unclipped["omega_rmse_base"], torch.zeros(4))
    # deviation in cm is 100 × the RMS Euclidean distance in m
    assert torch.allclose(unclipped["deviation_cm"], 100 * unclipped["hand_rmse"])
    with pytest.raises(ConfigError, match="scorbot_brownian.n_steps"):
        make_task_family("scorbot_brownian", n_steps=100, dt_ms=1.0)


def test_the_generator_never_receives_the_trainee_spikes_and_filters_its_signal():
    learner, family, _ = from_experiment("natural_cpu", "error_module.n_rec=12", "error_module.n_adaptive=4",
                                         "model.n_rec=10")
    module = learner.error_module
    assert "learner_spikes" not in learner.information and not module.use_spikes
    meta = learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64)["error_module"]
    batch = family.sample(2, torch.Generator().manual_seed(1), torch.float64)
    spikes = (torch.rand(2, 249, 10, generator=torch.Generator().manual_seed(2)) < 0.05).double()
    obs = Observation(spikes=spikes, inputs=batch.inputs, context=batch.context)
    permuted = obs._replace(spikes=spikes[..., torch.randperm(10)])
    signals, trajectory = module.run(meta, obs)
    assert torch.equal(signals, module.run(meta, permuted)[0])
    # L^t = decay·L^{t−1} + Ψ ξ^t, with ξ the generator's spikes
    decay = math.exp(-1.0 / 20.0)
    previous = torch.zeros(2, 10, dtype=torch.float64)
    xi = trajectory.outputs
    assert xi.sum() > 0
    for t in range(249):
        previous = decay * previous + xi[:, t] @ meta["proj"].T
        assert torch.allclose(signals[:, t], previous, rtol=1e-10, atol=1e-12)


def test_presets_have_the_published_sizes():
    learner, family, training = from_experiment("natural_paper")
    cell, module = learner.network.cell, learner.error_module.cell
    assert (cell.n_rec, cell.v_th, cell.n_ref) == (250, 0.6, 5)
    assert (module.n_rec, module.n_adaptive, module.v_th, module.beta, module.tau_a) == (800, 240, 1.3, 1.6, 600.0)
    assert module.n_in == 5 + 48 and learner.inner_lr == 1e-4 and not learner.learn_inner_lr
    assert (training.batch_size, training.lr, training.clip_norm) == (90, 1.5e-3, 0.0)


def test_a_scorbot_run_on_the_pcm_device_model_is_still_refused_by_the_export_in_one_line(tmp_path, capsys):
    """Scorbot runs export (tests/test_scorbot_export.py); the committed one on the PCM device model does not: the
    exported rule has no device model, and the export says so in one line before anything is written."""
    from pathlib import Path

    from eprop_l2l.cli import main

    run = Path(__file__).resolve().parent.parent / "docs" / "results" / "natural_pcm" / "seed0"
    for target in ("rule", "lava"):
        assert main(["export", str(run), "--target", target, "--out", str(tmp_path / "export")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "device.kind: pcm" in err, err
        assert not (tmp_path / "export").exists() and list(tmp_path.iterdir()) == []
