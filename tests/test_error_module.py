"""The learned error module (e-prop 2): its whole-trial and step-by-step signals agree, e-prop driven by it is
the same online and fused, and gradients reach its weights through the update."""

import pytest
import torch

from eprop_l2l.cells.lif import LIF
from eprop_l2l.error_modules.base import Observation
from eprop_l2l.error_modules.learned import LearnedErrorModule
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.meta import params as tree

from .builders import make_cell, make_trial, relative_error

N_CONTEXT = 6


def make_module(n_learner: int, n_inputs: int, use_spikes: bool = True, **kw) -> LearnedErrorModule:
    width = N_CONTEXT + (n_learner if use_spikes else 0) + n_inputs
    cell = LIF(n_in=width, n_rec=9, v_th=0.3, n_ref=2, dt_ms=1.0)
    return LearnedErrorModule(cell, n_learner, N_CONTEXT, n_inputs, use_spikes=use_spikes, projection_scale=3.0,
                              **{"dt_ms": 1.0, **kw})


@pytest.mark.parametrize("use_spikes", [True, False])
def test_sequence_equals_iterated_step(use_spikes):
    network, params, x, target, mask, g = make_trial(make_cell("lif", dt_ms=1.0))
    module = make_module(network.cell.n_rec, network.cell.n_in, use_spikes)
    em = module.init_params(g, torch.float64)
    em["cell"]["w_in"] = em["cell"]["w_in"] * 2
    trajectory, y = network.run(params, x)
    context = (torch.rand(x.shape[0], x.shape[1], N_CONTEXT, generator=g) < 0.3).double()
    obs = Observation(error=y - target, output=y, target=target, spikes=trajectory.outputs, inputs=x, context=context)
    signals, em_trajectory = module.run(em, obs)
    assert em_trajectory.outputs.sum() > 0 and signals.abs().max() > 0
    stepped = super(LearnedErrorModule, module).sequence(em, obs)  # the generic loop over ``step``
    assert relative_error(stepped, signals) <= 1e-12


@pytest.mark.parametrize("per_task", [False, True])
def test_eprop2_update_online_equals_fused_and_reaches_the_module(spiking_kind, per_task):
    """κ = 0 and W_in, W_rec plastic: the e-prop 2 inner update."""
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind), per_task=per_task, steps=40)
    module = make_module(network.cell.n_rec, network.cell.n_in)
    em_base = module.init_params(g, torch.float64)
    em_base["cell"]["w_in"] = em_base["cell"]["w_in"] * 2
    context = (torch.rand(x.shape[0], x.shape[1], N_CONTEXT, generator=g) < 0.3).double()
    probe = {n: torch.randn(params[n].shape, generator=g, dtype=torch.float64) for n in ("w_in", "w_rec")}
    outcomes = []
    for rule in (eprop_fused, eprop_online):
        em = tree.tree_map(lambda v: v.clone().requires_grad_(), em_base)
        w0 = {k: v.clone().requires_grad_() for k, v in params.items()}
        result = rule(network, w0, x, target, mask, Loss(), module, source_params=em, plastic=("w_in", "w_rec"),
                      kappa=0.0, context=context)
        objective = sum((probe[n] * result.grads[n]).sum() for n in probe)
        grads = torch.autograd.grad(objective, [*tree.leaves(em), w0["w_in"], w0["w_rec"]])
        outcomes.append((result.grads, grads))
    (fused, fused_outer), (online, online_outer) = outcomes
    for name in ("w_in", "w_rec"):
        assert fused[name].norm() > 0
        assert relative_error(online[name], fused[name]) <= 1e-10
    for a, b in zip(online_outer, fused_outer, strict=True):
        assert b.norm() > 0
        assert relative_error(a, b) <= 1e-10


def test_bad_error_module_configs():
    cell = LIF(n_in=10, n_rec=5, dt_ms=1.0)
    with pytest.raises(ConfigError, match="^error_module.cell.n_in: must equal the input width 13"):
        LearnedErrorModule(cell, n_learner=7, n_context=6, n_inputs=0, dt_ms=1.0)
    with pytest.raises(ConfigError, match="^error_module.use_context: the error module sees nothing"):
        LearnedErrorModule(cell, n_learner=7, use_context=False, use_spikes=False, use_inputs=False, dt_ms=1.0)
    with pytest.raises(ConfigError, match="^error_module.signal_tau"):
        LearnedErrorModule(LIF(n_in=13, n_rec=5, dt_ms=1.0), n_learner=7, n_context=6, signal_tau=0.0, dt_ms=1.0)
