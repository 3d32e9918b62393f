"""Bad values fail early with one line naming the field (eprop_l2l.errors.ConfigError)."""

import pytest
import torch

from eprop_l2l.cells import make_cell
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.inner_loop.train import RuleTraining

CASES = [
    (lambda: make_cell("lif", n_in=3, n_rec=5, tau_m=-20.0, dt_ms=1.0), "lif.tau_m", "> 0"),
    (lambda: make_cell("lif", n_in=3, n_rec=0, dt_ms=1.0), "lif.n_rec", ">= 1"),
    (lambda: make_cell("alif", n_in=3, n_rec=5, tau_a=0.0, dt_ms=1.0), "alif.tau_a", "> 0"),
    (lambda: make_cell("alif", n_in=3, n_rec=5, n_adaptive=6, dt_ms=1.0), "alif.n_adaptive", "<= n_rec"),
    (lambda: make_cell("lif", n_in=3, n_rec=5, n_ref=-1, dt_ms=1.0), "lif.n_ref", ">= 0"),
    (lambda: make_cell("lif", n_in=3, n_rec=5, v_th=float("nan"), dt_ms=1.0), "lif.v_th", "> 0"),
    (lambda: make_cell("lif", n_in=3, n_rec=5, surrogate="sigmoid", dt_ms=1.0), "lif.surrogate", "unknown value"),
    (lambda: make_cell("lif", n_in=3, n_rec=5, n_rec_typo=4, dt_ms=1.0), "lif.n_rec_typo", "unknown field"),
    (lambda: make_cell("lif", n_in=2.5, n_rec=5, dt_ms=1.0), "lif.n_in", "integer"),
    (lambda: make_cell("gru", n_in=3, n_rec=5), "cell", "unknown cell 'gru'"),
    (lambda: make_cell("lstm", n_in=3, n_rec=0), "lstm.n_rec", ">= 1"),
    (lambda: make_cell("rate", n_in=3, n_rec=4, tau=-1.0, dt_ms=1.0), "rate.tau", "> 0"),
    (lambda: LeakyReadout(5, 2, tau_out=0.0, dt_ms=1.0), "readout.tau_out", "> 0"),
    (lambda: Feedback("mirror", 5, 2), "feedback.kind", "unknown value"),
    (lambda: Loss("hinge"), "loss", "unknown value"),
    (lambda: RateRegularizer(coefficient=-1.0, dt_ms=1.0), "regularization.coefficient", ">= 0"),
    (lambda: RuleTraining(lr=-1e-3), "training.lr", "> 0"),
    (lambda: RuleTraining(n_iterations=0), "training.n_iterations", ">= 1"),
]


@pytest.mark.parametrize("build,key,problem", CASES, ids=[c[1] for c in CASES])
def test_bad_value_names_the_field(build, key, problem):
    with pytest.raises(ConfigError) as info:
        build()
    message = str(info.value)
    assert message.startswith(f"{key}: ") and problem in message
    assert "\n" not in message


def test_wrong_fast_weight_shape_and_input_width_fail_before_compute():
    cell = make_cell("lif", n_in=3, n_rec=5, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(5, 2, dt_ms=1.0))
    params = network.init_params(torch.Generator().manual_seed(0))
    source = Feedback("symmetric", 5, 2)
    x, target, mask = torch.zeros(2, 10, 3), torch.zeros(2, 10, 2), torch.ones(2, 10)
    bad = {**params, "w_rec": torch.zeros(5, 4)}
    with pytest.raises(ConfigError, match=r"^params.w_rec: expected trailing shape \(5, 5\)"):
        network.run(bad, x)
    with pytest.raises(ConfigError, match="^inputs: expected 3 input channels, got 4"):
        network.run(params, torch.zeros(2, 10, 4))
    with pytest.raises(ConfigError, match="^traces: unknown value 'exact'"):
        eprop_online(network, params, x, target, mask, Loss(), source, traces="exact")
