"""The current-based LIF cell (eprop_l2l.cells.cuba_lif), float64:

* its step equals the equations written out by hand (an independent numpy recursion, bit for bit);
* the neuron-internal Jacobian of its step under the e-prop convention, by ``jacfwd``, is the constant block
  D = [[α_s, 0], [α_s, α]] per neuron and zero between neurons;
* (its closed-form traces equal the forward-mode traces of its step, ≤ 1e-10: ``tests/test_cells.py``, with
  LIF's and ALIF's);
* fused e-prop (its adjoint) equals the BPTT gradient of the autodiff form and the online closed-form execution;
  exact RTRL (``jacfwd``) equals BPTT, ≤ 1e-10;
* it never enters the LIF/ALIF fused loop (whose kernels compute other equations): ``fast`` and unrecorded trials
  run its own step, and the loop refuses it;
* its spec round-trips to the same cell, and bad values are refused in one line naming the key.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.func import jacfwd

from eprop_l2l.cells import make_cell as registered_cell
from eprop_l2l.cells.cuba_lif import CubaLIF, CubaLIFState
from eprop_l2l.cells.from_spec import cell_from_spec
from eprop_l2l.cells.simulate import simulate
from eprop_l2l.cells.spec import CurrentSpec, NeuronSpec
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.hardware.rule import ExportError, describe
from eprop_l2l.inner_loop.bptt import bptt_grads, bptt_result
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.inner_loop.rtrl import rtrl_grads
from eprop_l2l.meta.params import flat
from eprop_l2l.numerics.fused_loop import spiking_loop
from eprop_l2l.runs.build import from_experiment

from .builders import make_cell, make_trial, relative_error

REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)


def by_hand(cell: CubaLIF, params, x: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The equations of the module docstring as a numpy loop (no library code)."""
    a_s, a = math.exp(-cell.dt_ms / cell.tau_syn), math.exp(-cell.dt_ms / cell.tau_m)
    s = 1.0 if cell.input_scaling == "new" else 1.0 - a
    w_in, w_rec, xs = params["w_in"].numpy(), params["w_rec"].numpy(), x.numpy()
    b, n = xs.shape[0], cell.n_rec
    i, v, z, r = np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n)), np.zeros((b, n))
    out_i, out_v, out_z = [], [], []
    for t in range(xs.shape[1]):
        ref = np.clip(r + cell.n_ref * z - 1.0, 0.0, cell.n_ref) if cell.n_ref else r
        i = a_s * i + s * (xs[:, t] @ w_in.T + z @ w_rec.T)
        v = a * v + i - cell.v_th * z
        z = ((v - cell.v_th) / cell.v_th > 0).astype(float) * (ref <= 0)
        r = ref
        out_i.append(i), out_v.append(v), out_z.append(z)
    return np.stack(out_i, 1), np.stack(out_v, 1), np.stack(out_z, 1)


@pytest.mark.parametrize("scaling", ["new", "old"])
def test_step_is_the_equations(scaling):
    cell = make_cell("cuba_lif", input_scaling=scaling)
    _, params, x, *_ = make_trial(cell, steps=60, input_gain=1.0 if scaling == "new" else 20.0)
    trajectory = simulate(cell, params, x)
    i, v, z = by_hand(cell, params, x)
    assert z.sum() > 20 and (z.sum(1) > 0).any()  # spikes, resets and refractory steps happen
    assert np.array_equal(trajectory.outputs.numpy(), z)
    np.testing.assert_allclose(trajectory.states.i_syn.numpy(), i, rtol=0, atol=1e-12)
    np.testing.assert_allclose(trajectory.states.v.numpy(), v, rtol=0, atol=1e-12)


def test_block_d_is_the_constant_two_by_two_matrix():
    cell = make_cell("cuba_lif", n_rec=5)
    _, params, x, *_ = make_trial(cell, steps=25, batch=1)
    trajectory = simulate(cell, params, x)
    a_s, a = cell.spec.alpha_syn, cell.spec.alpha
    block = torch.tensor([[a_s, 0.0], [a_s, a]], dtype=torch.float64)
    expected = torch.kron(block, torch.eye(cell.n_rec, dtype=torch.float64))  # (i, v) × (i, v), per neuron
    for t in (3, 12, 24):
        prev = type(trajectory.padded)(*(f[:, t] for f in trajectory.padded))

        def hidden(h, prev=prev, t=t):
            i_prev, v_prev = h[: cell.n_rec].unsqueeze(0), h[cell.n_rec :].unsqueeze(0)
            state = CubaLIFState(i_prev, v_prev, prev.z, prev.ref)
            new, _ = cell.step(params, state, x[:, t], paths="local")
            return torch.cat([new.i_syn[0], new.v[0]])

        d = jacfwd(hidden)(torch.cat([prev.i_syn[0], prev.v[0]]))
        assert torch.equal(d, expected), t


@pytest.mark.parametrize("readout_scaling", ["new", "old"])
@pytest.mark.parametrize("per_task", [False, True])
def test_fused_eprop_equals_the_autodiff_form_and_the_online_execution(per_task, readout_scaling):
    network, params, x, target, mask, _ = make_trial(make_cell("cuba_lif"), per_task=per_task,
                                                     readout_scaling=readout_scaling)
    symmetric = Feedback("symmetric", network.cell.n_rec, 2)
    fused = eprop_fused(network, params, x, target, mask, Loss(), symmetric, regularizer=REG)
    online = eprop_online(network, params, x, target, mask, Loss(), symmetric, regularizer=REG)
    autodiff_form, value = bptt_grads(network, params, x, target, mask, Loss(), REG, paths="local")
    exact, _ = bptt_grads(network, params, x, target, mask, Loss(), REG)
    assert torch.allclose(fused.loss, value, rtol=1e-12)
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert autodiff_form[name].norm() > 0
        assert relative_error(fused.grads[name], autodiff_form[name]) <= 1e-10, name
        assert relative_error(online.grads[name], autodiff_form[name]) <= 1e-10, name
    assert relative_error(fused.grads["w_rec"], exact["w_rec"]) > 1e-3  # e-prop is an approximation here


def test_rtrl_equals_bptt():
    network, params, x, target, mask, _ = make_trial(make_cell("cuba_lif", n_rec=5), batch=2, steps=30)
    bptt, value_bptt = bptt_grads(network, params, x, target, mask, Loss(), REG)
    rtrl, value_rtrl = rtrl_grads(network, params, x, target, mask, Loss(), REG)
    assert torch.allclose(value_bptt, value_rtrl, rtol=1e-12)
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert bptt[name].norm() > 0
        assert relative_error(rtrl[name], bptt[name]) <= 1e-10, name


def test_the_fused_loop_is_never_used_and_refuses_the_cell():
    network, params, x, target, mask, _ = make_trial(make_cell("cuba_lif"))
    cell = network.cell
    stepped = simulate(cell, params, x)
    with torch.no_grad():  # an unrecorded trial: LIF/ALIF would take the one-node loop here
        unrecorded = simulate(cell, params, x, fast=True)
    for a, b in zip(stepped.padded, unrecorded.padded, strict=True):
        assert torch.equal(a, b)
    slow = bptt_result(network, params, x, target, mask, Loss(), regularizer=REG)
    fast = bptt_result(network, params, x, target, mask, Loss(), regularizer=REG, fast=True)
    # the per-task form probes the input current (the weights enter the synaptic current as s·W·pre)
    shared = bptt_result(network, params, x, target, mask, Loss())
    per_task = bptt_result(network, params, x, target, mask, Loss(), fast=True, per_task=True)
    for name in ("w_in", "w_rec", "w_out"):
        assert torch.equal(slow.grads[name], fast.grads[name]), name
        assert relative_error(per_task.grads[name].sum(0), shared.grads[name]) <= 1e-12, name
    with pytest.raises(TypeError, match="LIF/ALIF dynamics, not CubaLIF's"):
        spiking_loop(cell, params, cell.input_current(params, x), cell.init_state(x.shape[0], dtype=x.dtype))


def test_spec_round_trip_and_refusals():
    cell = registered_cell("cuba_lif", n_in=3, n_rec=4, tau_syn=7.0, n_ref=1, input_scaling="old", dt_ms=0.5)
    spec = cell.spec
    assert isinstance(spec, CurrentSpec) and spec.model == "cuba_lif"
    assert spec.alpha_syn == math.exp(-0.5 / 7.0) and spec.input_scale == 1.0 - spec.alpha
    back = NeuronSpec.from_dict(spec.to_dict())
    assert back == spec and cell_from_spec(back, 3) == cell
    record = {k: v for k, v in spec.to_dict().items() if k != "tau_syn_ms"}
    for build, key in ((lambda: registered_cell("cuba_lif", n_in=3, n_rec=4, tau_syn=0.0, dt_ms=1.0),
                        "cuba_lif.tau_syn"),
                       (lambda: registered_cell("cuba_lif", n_in=3, n_rec=4, tau_m=-1.0, dt_ms=1.0), "cuba_lif.tau_m"),
                       (lambda: registered_cell("cuba_lif", n_in=3, n_rec=4, tau=1.0, dt_ms=1.0), "cuba_lif.tau"),
                       (lambda: NeuronSpec.from_dict(record), "neuron spec.tau_syn_ms")):
        with pytest.raises(ConfigError) as err:
            build()
        assert str(err.value).startswith(f"{key}: ") and "\n" not in str(err.value)


def test_the_learning_engine_export_refuses_current_based_populations():
    """The rule description holds one presynaptic trace per synapse (LIF's F_α); the CUBA eligibility needs two."""
    for overrides, key in ((["model=cuba_lif"], "model.cell"), (["error_module.cell=cuba_lif"], "error_module.cell")):
        learner, *_ = from_experiment("tiny", *overrides)
        meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0)))
        with pytest.raises(ExportError) as err:
            describe(learner, meta)
        assert str(err.value).startswith(f"{key}: CubaLIF") and "\n" not in str(err.value)
