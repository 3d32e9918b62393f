"""One time step for the whole run (``task.dt_ms``): every constant built from a config with dt = 2 ms uses 2 ms,
the arm families describe the same movements in physical time at 1 and 2 ms, rates are reported in Hz, a train
run at 2 ms records its step and cannot be resumed at another, and impossible steps are refused in one line."""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from eprop_l2l.cells import LIF, LeakyReadout, RecurrentNetwork
from eprop_l2l.cli import main
from eprop_l2l.config.compose import load_config
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.meta.learner import MetaLearner
from eprop_l2l.runs.build import build
from eprop_l2l.task_families.arm import ArmBrownian, ArmSines, arm_forward, population_code
from eprop_l2l.task_families.arm_figure import figure_one_shot
from eprop_l2l.task_families.arm_objective import arm_errors
from eprop_l2l.units import per_step, rate_hz, whole_steps

QUIET = ("wandb.mode=disabled", "run.progress=false")


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def built_at_2ms():
    learner, family, _, _ = build(load_config(["experiment=tiny", "task.dt_ms=2"]))
    return learner, family


# ------------------------------------------------------------------------------------------ config → constants


def test_a_2ms_config_builds_every_constant_with_2ms(built_at_2ms):
    learner, family = built_at_2ms
    cell, readout, module = learner.network.cell, learner.network.readout, learner.error_module
    decay = math.exp(-2.0 / 20.0)  # tiny: τ_m = τ_out = signal_tau = 20 ms
    assert cell.spec.dt_ms == 2.0 and cell.spec.alpha == decay
    assert readout.spec.dt_ms == 2.0 and readout.kappa == decay
    assert module.cell.spec.dt_ms == 2.0 and module.cell.spec.alpha == decay
    assert module.dt_ms == 2.0 and module.decay == decay  # the learning-signal filter
    assert learner.network_rate.target_per_step == pytest.approx(0.04, abs=1e-15)  # 20 Hz · 2 ms
    assert learner.module_rate.target_per_step == pytest.approx(0.02, abs=1e-15)  # 10 Hz · 2 ms
    assert learner.dt_ms == 2.0 and set(learner.time_steps().values()) == {2.0}
    assert family.dt_ms == 2.0 and family.clock_period_steps == 5
    batch = family.sample(2, gen(0), dtype=torch.float64)
    assert batch.dt_ms == 2.0 and batch.select(slice(0, 1)).dt_ms == 2.0 and batch.to("cpu").dt_ms == 2.0
    # the 10-ms clock fires every 5 steps: group g (the g-th 40 ms of 200) at 40 g + 10 j ms, as at 1 ms
    for g in range(5):
        spikes = torch.nonzero(batch.inputs[0, :, 2 * g]).flatten()
        assert torch.equal(spikes, torch.arange(20 * g, 20 * (g + 1), 5))
    one_ms = ArmSines(n_steps=200, n_pop_per_dim=10, dt_ms=1.0).sample(1, gen(0)).inputs[0]
    assert torch.equal(torch.nonzero(batch.inputs[0]) * torch.tensor([2, 1]), torch.nonzero(one_ms))


def test_the_kinematics_and_the_outer_loss_use_the_familys_step(built_at_2ms):
    _, family = built_at_2ms
    batch = family.sample(16, gen(1), dtype=torch.float64)
    hand = batch.extra["hand"]
    assert (arm_forward(batch.targets, dt_ms=family.dt_ms) - hand).abs().max().item() <= 1e-10
    # the objective integrates over the batch's step: the target velocities score zero hand error ...
    assert arm_errors(batch.targets, batch)["mse_cart"].max().item() <= 1e-20
    # ... which a 1-ms integration would not (half the angle travelled)
    assert (arm_forward(batch.targets, dt_ms=1.0) - hand).abs().max().item() > 0.05


def test_population_code_fires_at_the_same_rate_in_hz_at_2ms():
    xy = torch.full((20000, 2), 0.3, dtype=torch.float64)
    code = population_code(xy, gen(0), dt_ms=2.0)
    centres = torch.linspace(-1.4, 1.4, 100, dtype=torch.float64)
    nearest = (centres - 0.3).abs().argmin()
    expected_peak = 200 * math.exp(-((centres[nearest] - 0.3) ** 2) / (2 * 0.2**2))
    assert rate_hz(code.mean(0)[nearest], 2.0).item() == pytest.approx(expected_peak, rel=0.05)  # p = 0.4/step


# ------------------------------------------------------------------------------------------ physical invariance


def test_arm_sines_at_1ms_and_2ms_is_the_same_500ms_movement():
    """The draws do not depend on the step and t spans the trial: 500 × 1 ms and 250 × 2 ms give the same
    movements, integrated on two grids."""
    fine = ArmSines(n_steps=500, n_pop_per_dim=10, dt_ms=1.0).sample(500, gen(0), dtype=torch.float64)
    coarse = ArmSines(n_steps=250, n_pop_per_dim=10, dt_ms=2.0).sample(500, gen(0), dtype=torch.float64)
    # step k of the 2-ms grid ends at 2(k + 1) ms = the end of step 2k + 1 of the 1-ms grid
    distance = (fine.extra["hand"][:, 1::2] - coarse.extra["hand"]).norm(dim=-1)
    assert distance.mean().item() < 0.01  # measured 0.0048
    assert distance.max().item() < 0.1  # measured 0.044 (grid mismatch of linspace on fast movements)
    still_fine = arm_errors(torch.zeros_like(fine.targets), fine)["mse_cart"].mean().item()
    still_coarse = arm_errors(torch.zeros_like(coarse.targets), coarse)["mse_cart"].mean().item()
    assert still_fine == pytest.approx(0.211, abs=0.005)  # measured 0.21107 (seed 0)
    assert still_coarse == pytest.approx(still_fine, rel=0.01)  # measured 0.21105
    # the error module's population code: the same rate in Hz (measured 32.2 and 32.4 Hz)
    hz = [rate_hz(b.context.mean(), b.dt_ms).item() for b in (fine, coarse)]
    assert hz[1] == pytest.approx(hz[0], rel=0.03)


def test_arm_brownian_at_2ms_keeps_its_calibration():
    """The Brownian draws are per step, so only the distribution is invariant: increments of variance ∝ δt, a
    120-ms window (60 steps) and the same ω in rad/s keep the calibration numbers of the 1-ms family (without
    the √δt the velocity RMS would be 1/√2 of it)."""
    family = ArmBrownian(n_steps=250, n_pop_per_dim=10, dt_ms=2.0)
    assert family.window_steps == 60
    batch = family.sample(256, gen(0), dtype=torch.float64)
    assert batch.targets.pow(2).mean().sqrt().item() == pytest.approx(4.57, rel=0.1)  # measured 4.52
    still = arm_errors(torch.zeros_like(batch.targets), batch)["mse_cart"].mean().item()
    assert still == pytest.approx(0.148, rel=0.1)  # measured 0.1495
    assert (arm_forward(batch.targets, dt_ms=2.0) - batch.extra["hand"]).abs().max().item() <= 1e-10


# ------------------------------------------------------------------------------------------ rates in Hz


def test_rate_conversion_divides_spikes_per_step_by_the_step_in_seconds():
    spikes = torch.zeros(3, 100, 4)
    spikes[:, ::5] = 1.0  # one spike every 5 steps: 0.2 per step
    assert rate_hz(spikes.mean(), 2.0).item() == pytest.approx(100.0)  # every 10 ms
    assert rate_hz(spikes.mean(), 1.0).item() == pytest.approx(200.0)
    assert rate_hz(0.2, 0.5) == pytest.approx(400.0)
    assert per_step(rate_hz(0.04, 2.0), 2.0) == pytest.approx(0.04)
    assert whole_steps("k", "x", 10.0, 2.0) == 5 and whole_steps("k", "x", 10.0, 0.1) == 100


def test_learner_reports_network_rate_in_hz_at_2ms(built_at_2ms):
    learner, family = built_at_2ms
    meta = learner.init_meta_params(gen(0))
    with torch.no_grad():
        out = learner.forward(meta, family.sample(2, gen(3)))
    spikes = torch.cat([out["test_trajectory"].outputs] + [d.trajectory.outputs for d in out["demos"]], 1)
    per_step_count = spikes.mean().item()
    assert per_step_count > 0.01  # the network does fire
    assert out["metrics"]["rate_network_hz"].item() == pytest.approx(per_step_count * 500.0, rel=1e-6)


def test_one_model_one_step():
    network = RecurrentNetwork(LIF(3, 5, dt_ms=2.0), LeakyReadout(5, 2, dt_ms=1.0))  # readout at another step
    with pytest.raises(ConfigError, match=r"^task\.dt_ms: the model's parts use different time steps: "
                                          r"network 2 ms, readout 1 ms"):
        MetaLearner(network, Feedback("symmetric", 5, 2))
    learner = MetaLearner(RecurrentNetwork(LIF(10, 5, dt_ms=1.0), LeakyReadout(5, 2, dt_ms=1.0)),
                          Feedback("symmetric", 5, 2))
    batch = ArmSines(n_steps=50, n_pop_per_dim=4, dt_ms=2.0).sample(1, gen(0))
    with pytest.raises(ConfigError, match=r"^task\.dt_ms: the trials have 2-ms steps, the model 1-ms"):
        learner.forward(learner.init_meta_params(gen(0)), batch)


def test_figure_time_axes_are_in_ms(built_at_2ms, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    learner, family = built_at_2ms
    with torch.no_grad():
        batch = family.sample(1, gen(0))
        out = learner.forward(learner.init_meta_params(gen(0)), batch)
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    data = figure_one_shot(tmp_path / "f.png", batch, out)
    axes = {ax.get_title(): ax for ax in figures[0].axes}
    velocity = axes["joint velocities (shoulder ω1, elbow ω2)"]
    assert velocity.lines[0].get_xdata()[-1] == 2.0 * (family.n_steps - 1) and velocity.get_xlabel() == "time (ms)"
    signals = axes["learning signals L_j(t) of the demonstration trial (drive the one e-prop update)"]
    assert signals.images[0].get_extent()[1] == 2.0 * family.n_steps
    raster = axes["learning network, test trial (after the update)"].collections[0].get_offsets()[:, 0]
    assert len(raster) and (raster % 2 == 0).all() and raster.max() <= 2.0 * (family.n_steps - 1)
    assert (raster == data["raster_test"][:, 0]).all()
    monkeypatch.undo()
    plt.close(figures[0])


# ------------------------------------------------------------------------------------------ the run layer


def test_train_at_2ms_records_the_step_and_resume_refuses_another(tmp_path, capsys):
    run_dir = tmp_path / "dt2"
    assert main(["train", "experiment=tiny", "task.dt_ms=2", "optim.n_iterations=2", f"run.dir={run_dir}",
                 *QUIET]) == 0
    assert re.search(r"^  dt_ms: 2\.0$", (run_dir / "config.yaml").read_text(), re.M)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 1.0 < metrics["rate_network_hz"] < 500.0 and 1.0 < metrics["rate_module_hz"] < 500.0  # Hz
    capsys.readouterr()
    assert main(["evaluate", str(run_dir)]) == 0  # the stored step is used again
    assert json.loads((run_dir / "metrics.json").read_text())["mse_cart_after"] == metrics["mse_cart_after"]
    capsys.readouterr()
    stored = (run_dir / "config.yaml").read_text()
    assert main(["train", "experiment=tiny", "optim.n_iterations=4", f"run.dir={run_dir}", *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "another configuration (task.dt_ms 2.0 → 1.0)" in err, err
    assert (run_dir / "config.yaml").read_text() == stored


BAD_DT = [
    ("0", "must be > 0, got 0.0"),
    ("-1", "must be > 0, got -1.0"),
    ("nan", "must be > 0, got nan"),
    ("20", "the clock period of 10 ms is shorter than one 20-ms step"),
    ("3", "the clock period of 10 ms is not a whole number of 3-ms steps"),
    ("10", "the population code's peak rate 200.0 Hz gives a spike probability 2 > 1"),
]


@pytest.mark.parametrize(("value", "problem"), BAD_DT, ids=[v for v, _ in BAD_DT])
def test_bad_dt_gives_one_line_naming_task_dt_ms_and_writes_nothing(value, problem, tmp_path, capsys):
    run_dir = tmp_path / "never"
    assert main(["train", "experiment=tiny", f"task.dt_ms={value}", f"run.dir={run_dir}", *QUIET]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"eprop-l2l: task.dt_ms: {problem}"), err
    assert not run_dir.exists()


def test_a_step_that_does_not_divide_the_brownian_window_is_refused():
    with pytest.raises(ConfigError, match=r"^arm_brownian\.dt_ms: the Hann window of 120 ms is not a whole number "
                                          r"of 7-ms steps"):
        ArmBrownian(clock_period_ms=14, pop_peak_hz=100.0, dt_ms=7.0)
    with pytest.raises(ConfigError, match=r"^task\.dt_ms: the clock period"):
        build(load_config(["experiment=tiny", "task.family=arm_brownian", "task.dt_ms=4"]))
