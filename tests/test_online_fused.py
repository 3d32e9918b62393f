"""Online (causal, per-synapse traces) and fused (whole-trial adjoint, one matrix product) executions of e-prop
compute the same update, and the same gradients through it."""

import pytest
import torch

from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer

from .builders import make_cell, make_trial, relative_error

REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)
NAMES = ("w_in", "w_rec", "w_out", "b_out")


def _both(network, params, x, target, mask, source, source_params, **kw):
    common = dict(source_params=source_params, regularizer=REG, **kw)
    fused = eprop_fused(network, params, x, target, mask, Loss(), source, **common)
    online = eprop_online(network, params, x, target, mask, Loss(), source, **common)
    return fused, online


@pytest.mark.parametrize("readout_scaling", ["new", "old"])
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("feedback", ["symmetric", "random", "adaptive"])
def test_online_equals_fused_float64(spiking_kind, per_task, feedback, readout_scaling):
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind), per_task=per_task, steps=60,
                                                     readout_scaling=readout_scaling)
    source = Feedback(feedback, network.cell.n_rec, 2)
    source_params = source.init_params(g, torch.float64)
    fused, online = _both(network, params, x, target, mask, source, source_params)
    refractory_steps = (fused.trajectory.states.ref > 0).sum()
    assert refractory_steps > 0 and fused.trajectory.outputs.sum() > 0
    assert torch.allclose(fused.loss, online.loss, rtol=1e-12)
    for name in NAMES:
        assert fused.grads[name].shape == params[name].shape
        assert fused.grads[name].norm() > 0
        assert relative_error(online.grads[name], fused.grads[name]) <= 1e-10, name


def test_online_equals_fused_float32(spiking_kind):
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind), per_task=True, steps=200,
                                                     dtype=torch.float32)
    source = Feedback("random", network.cell.n_rec, 2)
    fused, online = _both(network, params, x, target, mask, source, source.init_params(g, torch.float32))
    for name in NAMES:
        assert relative_error(online.grads[name], fused.grads[name]) <= 1e-4, name


def test_online_with_autodiff_traces_equals_closed_form(spiking_kind):
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind), per_task=True, steps=40)
    source = Feedback("random", network.cell.n_rec, 2)
    source_params = source.init_params(g, torch.float64)
    common = dict(source_params=source_params, regularizer=REG)
    closed = eprop_online(network, params, x, target, mask, Loss(), source, **common)
    autodiff = eprop_online(network, params, x, target, mask, Loss(), source, **common, traces="autodiff")
    for name in NAMES:
        assert relative_error(autodiff.grads[name], closed.grads[name]) <= 1e-10, name


def test_no_kappa_filter_option_differs_and_still_agrees(spiking_kind):
    """kappa=0 (the e-prop 2 convention, no trace filtering) is a different update, computed alike both ways."""
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind), steps=50)
    source = Feedback("symmetric", network.cell.n_rec, 2)
    fused, online = _both(network, params, x, target, mask, source, {}, kappa=0.0)
    filtered = eprop_fused(network, params, x, target, mask, Loss(), source, source_params=None, regularizer=REG)
    assert relative_error(online.grads["w_in"], fused.grads["w_in"]) <= 1e-10
    assert relative_error(fused.grads["w_in"], filtered.grads["w_in"]) > 1e-2


def test_gradients_through_the_update_agree(spiking_kind):
    """The outer loop differentiates through the update: d(f(ΔW))/d(initial weights, feedback) is the same
    through the fused and the online execution."""
    network, base, x, target, mask, g = make_trial(make_cell(spiking_kind), steps=40)
    source = Feedback("random", network.cell.n_rec, 2)
    probe = {name: torch.randn(base[name].shape, generator=g, dtype=torch.float64) for name in NAMES}

    def outer_grads(rule):
        params = {k: v.clone().requires_grad_() for k, v in base.items()}
        source_params = {k: v.requires_grad_() for k, v in source.init_params(
            torch.Generator().manual_seed(7), torch.float64).items()}
        result = rule(network, params, x, target, mask, Loss(), source, source_params=source_params, regularizer=REG)
        objective = sum((probe[n] * result.grads[n]).sum() for n in NAMES)
        leaves = [*params.values(), *source_params.values()]
        return torch.autograd.grad(objective, leaves)

    for fused, online in zip(outer_grads(eprop_fused), outer_grads(eprop_online), strict=True):
        assert fused.norm() > 0
        assert relative_error(online, fused) <= 1e-10
