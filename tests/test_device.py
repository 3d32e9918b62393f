"""The PCM device model of the trainee's weights (eprop_l2l.inner_loop.device): its three noise sources against
the published fits re-implemented here, the update's resolution, and the meta-learner running through it."""

import math

import numpy as np
import pytest
import torch

from eprop_l2l.config.compose import load_config
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.device import PCMDevice
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.build import build

N = 200_000
ONLY = {"programming": dict(drift=False, read_noise=False), "drift": dict(programming_noise=False, read_noise=False),
        "read": dict(programming_noise=False, drift=False)}


def draws(device: PCMDevice, w: float, effect: str, seed: int = 0) -> np.ndarray:
    weights = torch.full((N,), w, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    out = device.read(weights, g) if effect == "read" else device.program(weights, g)
    return out.numpy()


@pytest.mark.parametrize("w", [0.1, 0.3, 0.5, -0.5])
def test_programming_noise_has_the_fitted_spread(w):
    x = abs(w)
    sigma = max(-1.1731 * x**2 + 1.9650 * x + 0.2635, 0.0) / 25.0  # conductance units → weight units
    out = draws(PCMDevice(**ONLY["programming"]), w, "programming")
    assert np.std(out - w) == pytest.approx(sigma, rel=0.01)
    assert abs(np.mean(out - w)) < 4 * sigma / math.sqrt(N)
    assert np.all(np.sign(out) == np.sign(w)) or np.all(out[np.sign(out) != np.sign(w)] == 0)


def test_zero_weights_are_not_programmed_and_weights_stay_on_their_side():
    device = PCMDevice(**ONLY["programming"])
    w = torch.tensor([0.0, 0.02, -0.02, 1.0, -1.0] * 20_000, dtype=torch.float64)
    out = device.program(w, torch.Generator().manual_seed(1))
    assert torch.all(out[w == 0] == 0)
    assert torch.all(out[w > 0] >= 0) and torch.all(out[w < 0] <= 0) and torch.all(out.abs() <= 1.0)


@pytest.mark.parametrize("w", [0.02, 0.5])
def test_drift_exponent_follows_the_fit(w):
    log_x = math.log(abs(w))
    mu = min(max(-0.0155 * log_x + 0.0244, 0.049), 0.1)
    s = min(max(-0.0125 * log_x - 0.0059, 0.008), 0.045)
    nu = -np.log(draws(PCMDevice(**ONLY["drift"]), w, "drift") / w) / math.log(32.0)
    folded_mean = s * math.sqrt(2 / math.pi) * math.exp(-mu**2 / (2 * s**2)) + mu * math.erf(mu / (s * math.sqrt(2)))
    assert np.mean(nu) == pytest.approx(folded_mean, rel=0.005)
    assert np.all(nu >= 0)


@pytest.mark.parametrize("w", [0.05, 0.5, -0.8])
def test_read_noise_has_the_fitted_spread(w):
    g = abs(w) * 25.0
    q = min(0.0088 / g**0.65, 0.2)
    sigma = g * q * math.sqrt(math.log((32.0 + 250e-9) / 250e-9)) / math.sqrt(2) / 25.0
    out = draws(PCMDevice(**ONLY["read"]), w, "read")
    assert np.std(out - w) == pytest.approx(sigma, rel=0.01)


def test_the_update_is_programmed_at_the_device_resolution_and_only_where_it_changes():
    device = PCMDevice(programming_noise=False, drift=False, read_noise=False)
    delta = torch.tensor([0.03, 0.032, -0.1, 0.2, 0.0], dtype=torch.float64, requires_grad=True)
    step = device.programmed_update(delta)
    assert step.tolist() == [0.0, 0.0625, -0.125, 0.1875, 0.0]
    step.sum().backward()
    assert delta.grad.tolist() == [1.0] * 5  # straight through
    w = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.5], dtype=torch.float64)
    noisy = PCMDevice(read_noise=False)
    after = noisy.reprogram(w, delta.detach(), torch.Generator().manual_seed(0))
    unchanged = step.detach() == 0
    assert torch.equal(after[unchanged], w[unchanged])  # not written: not re-noised
    assert torch.all(after[~unchanged] != (w + step.detach())[~unchanged])  # written: programming noise and drift


def test_an_update_below_the_resolution_still_passes_its_gradient():
    """Every entry rounds to zero, so nothing is written, and yet dW/dΔW = 1: the inner η and the signals that
    make ΔW can grow until the update reaches the device's resolution."""
    device = PCMDevice()
    w = torch.full((50,), 0.3, dtype=torch.float64)
    delta = torch.full((50,), 1e-3, dtype=torch.float64, requires_grad=True)
    after = device.reprogram(w, delta, torch.Generator().manual_seed(0))
    assert torch.equal(after.detach(), w)
    after.sum().backward()
    assert delta.grad.tolist() == [1.0] * 50


def tiny(*extra):
    cfg = load_config(["experiment=tiny", *extra])
    learner, family, _, _ = build(cfg)
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    batch = family.sample(4, torch.Generator().manual_seed(1))
    return learner, meta, batch


def test_a_device_without_effects_changes_nothing():
    import dataclasses

    learner, meta, batch = tiny()
    exact = learner.forward(meta, batch)
    inert = dataclasses.replace(learner, device=PCMDevice(w_max=1e3, update_step=0.0, programming_noise=False,
                                                          drift=False, read_noise=False))
    through = inert.forward(meta, batch, torch.Generator().manual_seed(5))
    torch.testing.assert_close(through["y_test"], exact["y_test"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(through["loss"], exact["loss"], rtol=1e-4, atol=1e-6)


def test_the_meta_learner_runs_through_the_chip_reproducibly_and_differentiably():
    learner, meta, batch = tiny("device.kind=pcm")
    assert isinstance(learner.device, PCMDevice)
    meta = tree_map(lambda v: v.requires_grad_(), meta)
    one = learner.forward(meta, batch, torch.Generator().manual_seed(3))
    again = learner.forward(meta, batch, torch.Generator().manual_seed(3))
    other = learner.forward(meta, batch, torch.Generator().manual_seed(4))
    assert torch.equal(one["y_test"], again["y_test"]) and not torch.equal(one["y_test"], other["y_test"])
    exact = tiny()[0].forward(meta, batch)
    assert not torch.allclose(one["y_test"], exact["y_test"])  # the noise does reach the trials
    one["loss"].backward()
    w_in = meta["network"]["w_in"]
    assert torch.isfinite(w_in.grad).all() and w_in.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match=r"^device\.kind: a device model draws noise"):
        learner.forward(meta, batch)


@pytest.mark.parametrize("overrides, message", [
    (["device.kind=memristor"], "device.kind: unknown value 'memristor'"),
    (["device.kind=pcm", "inner.precision=loihi"], "device.kind: a device model takes inner.precision=float"),
    (["device.kind=pcm", "device.update_step=-1"], "device.update_step: must be >= 0"),
])
def test_bad_device_settings_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
        build(load_config(["experiment=tiny", *overrides]))


def test_a_weight_beyond_the_range_still_gets_its_gradient():
    """Programming clips to ±w_max, and the gradient passes straight through the clip: a meta-parameter that
    has grown past the range can be trained back into it."""
    w = torch.tensor([1.5, -1.8, 0.4], dtype=torch.float64, requires_grad=True)
    out = PCMDevice(**ONLY["programming"]).program(w, torch.Generator().manual_seed(0))
    assert out.detach().abs().max() <= 1.0
    out.sum().backward()
    assert w.grad.tolist() == [1.0, 1.0, 1.0]


def test_the_export_refuses_a_run_on_the_device_model_in_one_line(tmp_path, capsys):
    """The exported rule has no PCM device model: the export says so instead of dropping the device silently."""
    from eprop_l2l.cli import main

    run = tmp_path / "run"
    assert main(["train", "experiment=tiny", "task=arm_brownian", "device.kind=pcm", "optim.n_iterations=1",
                 "eval.n_tasks=2", "eval.batch_size=2", "eval.figures=false", "wandb.mode=disabled",
                 "run.progress=false", f"run.dir={run}"]) == 0
    capsys.readouterr()
    for target in ("rule", "lava"):
        assert main(["export", str(run), "--target", target, "--out", str(tmp_path / "export")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "device.kind: pcm" in err
        assert not (tmp_path / "export").exists()
