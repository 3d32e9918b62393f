"""How often the PCM model's read noise is drawn (``device.read_every``; inner_loop/device.py,
inner_loop/read_each_step.py):

* per step: every step's draw is a fresh one with the fitted spread (re-computed here), reproducible from the
  generator's seed;
* a trial reads its chip weights once (``trial``: one matrix for all steps) or at every step (``step``: one read
  per weight and step), and its output equals a trial simulated step by step on the recorded reads;
* with the noise's spread at zero, the step-by-step trial gives the fused trial's loss and meta-gradients;
* bad settings are refused in one line.
"""

import dataclasses
import math

import pytest
import torch

from eprop_l2l.config.compose import load_config
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.device import CHIP_WEIGHTS, PCMDevice
from eprop_l2l.inner_loop.read_each_step import ReadEachStep
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.build import build
from tests.workers.device_noise import Recording

READ_ONLY = dict(programming_noise=False, drift=False)


def read_sd(w: float) -> float:
    """σ_r in weight units: the fit of the device model's docstring, for a synapse of two devices."""
    g = abs(w) * 25.0
    q = min(0.0088 / g**0.65, 0.2)
    return g * q * math.sqrt(math.log((32.0 + 250e-9) / 250e-9)) / math.sqrt(2) / 25.0


def test_per_step_reads_are_fresh_draws_with_the_fitted_spread():
    w = torch.full((40, 50), 0.5, dtype=torch.float64)
    device = PCMDevice(**READ_ONLY, read_every="step")
    reader = ReadEachStep(None, device, torch.Generator().manual_seed(7))
    draws = torch.stack([reader.deviations({"w_rec": w})["w_rec"] for _ in range(100)])  # 100 steps
    assert all(not torch.equal(draws[t], draws[t + 1]) for t in range(99))
    assert float(draws.std()) == pytest.approx(read_sd(0.5), rel=0.01)
    assert float(draws.std(0).mean()) == pytest.approx(read_sd(0.5), rel=0.02)  # each device, across the steps
    assert abs(float(draws.mean())) < 4 * read_sd(0.5) / math.sqrt(draws.numel())
    again = ReadEachStep(None, device, torch.Generator().manual_seed(7)).deviations({"w_rec": w})["w_rec"]
    assert torch.equal(again, draws[0])  # seeded through the generator passed in


def tiny(*extra):
    learner, family, _, _ = build(load_config(["experiment=tiny", "task.n_steps=40", *extra]))
    meta = learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64)
    batch = family.sample(3, torch.Generator().manual_seed(1)).to(torch.float64)
    return learner, meta, batch


def test_a_trial_reads_its_weights_once_or_at_every_step():
    learner, meta, batch = tiny()
    steps = batch.n_steps
    for every in ("trial", "step"):
        device = Recording(read_every=every)
        out = dataclasses.replace(learner, device=device).forward(meta, batch, torch.Generator().manual_seed(2))
        fast, network = out["fast"], learner.network
        per_trial = len(CHIP_WEIGHTS) * (1 if every == "trial" else steps)
        assert len(device.reads) == 2 * per_trial  # the demonstration and the test trial
        test_reads = device.reads[per_trial:]
        if every == "trial":  # one matrix per weight for the whole trial
            read = {**fast, **dict(zip(CHIP_WEIGHTS, test_reads, strict=True))}
            torch.testing.assert_close(out["y_test"], network.run(read, batch.inputs)[1], rtol=0, atol=1e-12)
            continue
        # a fresh matrix per weight and step: the trial simulated here step by step on the recorded reads
        state = network.cell.init_state(3, dtype=torch.float64)
        y, ys = network.readout.init_state(3, dtype=torch.float64), []
        for t in range(steps):
            read = {**fast, **dict(zip(CHIP_WEIGHTS, test_reads[3 * t:3 * t + 3], strict=True))}
            state, z = network.cell.step(read, state, batch.inputs[:, t])
            y = network.readout.step(read, y, z)
            ys.append(y)
        torch.testing.assert_close(out["y_test"], torch.stack(ys, 1), rtol=0, atol=1e-10)
        w_rec = torch.stack([test_reads[3 * t + 1] for t in range(steps)])
        assert not torch.equal(w_rec[0], w_rec[1])


def test_without_spread_the_step_by_step_trial_is_the_fused_one():
    learner, meta, batch = tiny()
    meta = tree_map(lambda v: v.requires_grad_(), meta)
    silent = dict(READ_ONLY, read_fit=(0.0, 0.65, 0.2))  # σ_r = 0: reads return the weights
    results = {}
    for every in ("trial", "step"):
        chip = dataclasses.replace(learner, device=PCMDevice(**silent, read_every=every))
        out = chip.forward(meta, batch, torch.Generator().manual_seed(2))
        grads = torch.autograd.grad(out["loss"], [meta["network"]["w_in"], meta["network"]["w_rec"]])
        results[every] = (out["loss"].detach(), out["y_test"].detach(), grads)
    (loss_a, y_a, g_a), (loss_b, y_b, g_b) = results["trial"], results["step"]
    torch.testing.assert_close(loss_b, loss_a, rtol=1e-10, atol=0)
    torch.testing.assert_close(y_b, y_a, rtol=0, atol=1e-10)
    for a, b in zip(g_a, g_b, strict=True):
        assert float(a.abs().max()) > 0
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-12)


@pytest.mark.parametrize("overrides, message", [
    (["device.kind=pcm", "device.read_every=sometimes"], "device.read_every: unknown value 'sometimes'"),
    (["device.kind=pcm", "device.read_every=step", "inner=bptt"], "device.read_every: 'step' needs inner.rule=eprop"),
])
def test_bad_read_schedules_are_refused_in_one_line(overrides, message):
    with pytest.raises(ConfigError, match="^" + message.replace(".", r"\.")):
        build(load_config(["experiment=tiny", *overrides]))
