"""e-prop's two executions read one options record (``inner_loop.eprop.EpropOptions``): the same keywords,
the same defaults, and the same refusal of a keyword that is not one of them."""

import pytest

from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop.eprop import EpropOptions, eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss

from .builders import make_cell, make_trial, relative_error


def test_the_defaults_are_the_readouts_kappa_and_every_weight():
    network, *_ = make_trial(make_cell("lif"))
    options = EpropOptions()
    assert options.trace_filter(network.readout) == network.readout.kappa
    assert EpropOptions(kappa=0.0).trace_filter(network.readout) == 0.0
    assert options.recurrent_plastic() == ("w_in", "w_rec")
    assert EpropOptions(plastic=("w_out", "w_rec")).recurrent_plastic() == ("w_rec",)


def test_both_executions_take_the_same_options_and_refuse_others():
    network, params, x, target, mask, _ = make_trial(make_cell("lif"), steps=30)
    source = Feedback("symmetric", network.cell.n_rec, 2)
    options = dict(plastic=("w_rec", "w_out"), kappa=0.0)
    fused = eprop_fused(network, params, x, target, mask, Loss(), source, **options)
    online = eprop_online(network, params, x, target, mask, Loss(), source, **options)
    assert set(fused.grads) == set(online.grads) == {"w_rec", "w_out"}
    for name in fused.grads:
        assert relative_error(online.grads[name], fused.grads[name]) <= 1e-10, name
    for execution in (eprop_fused, eprop_online):
        with pytest.raises(TypeError, match="kapa"):
            execution(network, params, x, target, mask, Loss(), source, kapa=0.0)
    with pytest.raises(TypeError, match="fast"):  # a fused execution's own keyword, not an option
        eprop_online(network, params, x, target, mask, Loss(), source, fast=True)
