"""The numeric identities the inner loop stands on (float64, relative error ≤ 1e-10):

* exact RTRL (forward mode, full Jacobian) == autograd BPTT;
* e-prop with the true partial learning signal (symmetric feedback, κ-filtered traces) == BPTT of the
  autodiff form of e-prop (previous spikes detached in the recurrent and reset paths), for both readout
  input scalings (s = 1, and s = 1 − κ: the feedback carries the readout's s);
* adaptive feedback whose matrix equals W^outᵀ gives symmetric feedback's update, and still does after both
  took the same update step;
* with W_rec = 0, e-prop == the full BPTT gradient under the same reset convention.
"""

import pytest
import torch

from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.inner_loop.rtrl import rtrl_grads

from .builders import make_cell, make_trial, relative_error

REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)


@pytest.mark.parametrize("loss_kind", ["mse", "cross_entropy"])
def test_rtrl_equals_bptt(spiking_kind, loss_kind):
    network, params, x, target, mask, _ = make_trial(make_cell(spiking_kind, n_rec=6), batch=2, steps=30)
    if loss_kind == "cross_entropy":
        target = torch.softmax(3 * target, -1)
    loss = Loss(loss_kind)
    bptt, value_bptt = bptt_grads(network, params, x, target, mask, loss, REG)
    rtrl, value_rtrl = rtrl_grads(network, params, x, target, mask, loss, REG)
    assert torch.allclose(value_bptt, value_rtrl, rtol=1e-12)
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert bptt[name].norm() > 0
        assert relative_error(rtrl[name], bptt[name]) <= 1e-10, name


@pytest.mark.parametrize("readout_scaling", ["new", "old"])
@pytest.mark.parametrize("per_task", [False, True])
def test_eprop_with_partial_learning_signal_equals_autodiff_form(spiking_kind, per_task, readout_scaling):
    network, params, x, target, mask, _ = make_trial(make_cell(spiking_kind), per_task=per_task,
                                                     readout_scaling=readout_scaling)
    symmetric = Feedback("symmetric", network.cell.n_rec, 2)
    eprop = eprop_fused(network, params, x, target, mask, Loss(), symmetric, regularizer=REG)
    autodiff_form, value = bptt_grads(network, params, x, target, mask, Loss(), REG, paths="local")
    exact, _ = bptt_grads(network, params, x, target, mask, Loss(), REG)
    assert torch.allclose(eprop.loss, value, rtol=1e-12)
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert relative_error(eprop.grads[name], autodiff_form[name]) <= 1e-10, name
    # ... and it is an approximation: the exact gradient differs once recurrent credit exists.
    assert relative_error(eprop.grads["w_rec"], exact["w_rec"]) > 1e-3


@pytest.mark.parametrize("readout_scaling", ["new", "old"])
def test_eprop_equals_bptt_without_recurrent_weights(spiking_kind, readout_scaling):
    network, params, x, target, mask, _ = make_trial(make_cell(spiking_kind), readout_scaling=readout_scaling)
    params["w_rec"] = torch.zeros_like(params["w_rec"])
    symmetric = Feedback("symmetric", network.cell.n_rec, 2)
    eprop = eprop_fused(network, params, x, target, mask, Loss(), symmetric, regularizer=REG)
    same_reset, _ = bptt_grads(network, params, x, target, mask, Loss(), REG, paths="no_reset")
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert same_reset[name].norm() > 0
        assert relative_error(eprop.grads[name], same_reset[name]) <= 1e-10, name


@pytest.mark.parametrize("readout_scaling", ["new", "old"])
def test_adaptive_feedback_follows_the_readout_like_symmetric(readout_scaling):
    """Adaptive B = W^outᵀ gives the symmetric update (the readout's input scale included); B receives W^outᵀ's
    update (``adaptive_grad``), so after the same step of both they still agree — with the autodiff form too."""
    network, params, x, target, mask, _ = make_trial(make_cell("alif", dt_ms=1.0), readout_scaling=readout_scaling)
    symmetric = Feedback("symmetric", network.cell.n_rec, 2)
    adaptive = Feedback("adaptive", network.cell.n_rec, 2)
    fb = {"b_fb": params["w_out"].mT.clone()}
    for step in range(2):
        sym = eprop_fused(network, params, x, target, mask, Loss(), symmetric, regularizer=REG)
        ada = eprop_fused(network, params, x, target, mask, Loss(), adaptive, source_params=fb, regularizer=REG)
        autodiff_form, _ = bptt_grads(network, params, x, target, mask, Loss(), REG, paths="local")
        for name in ("w_in", "w_rec", "w_out", "b_out"):
            assert relative_error(ada.grads[name], sym.grads[name]) <= 1e-10, (step, name)
            assert relative_error(ada.grads[name], autodiff_form[name]) <= 1e-10, (step, name)
        lr = 0.5
        fb = {"b_fb": fb["b_fb"] - lr * adaptive.adaptive_grad(fb, ada.grads["w_out"])}
        params = {k: v - lr * sym.grads[k] for k, v in params.items()}
        assert relative_error(fb["b_fb"], params["w_out"].mT) <= 1e-12


def test_the_reset_convention_matters():
    """Guard against a vacuous comparison: with the reset path included the gradients do differ."""
    network, params, x, target, mask, _ = make_trial(make_cell("lif", dt_ms=1.0))
    params["w_rec"] = torch.zeros_like(params["w_rec"])
    full, _ = bptt_grads(network, params, x, target, mask, Loss(), REG)
    no_reset, _ = bptt_grads(network, params, x, target, mask, Loss(), REG, paths="no_reset")
    assert relative_error(no_reset["w_in"], full["w_in"]) > 1e-3
