"""Dynamics of the spiking cells (LIF, ALIF, current-based LIF) and the readout, pinned to the equations of Bellec
et al. 2020; the checks every spiking cell shares are parametrised over the three."""

import math

import pytest
import torch
from torch.func import jacfwd

from eprop_l2l.cells.alif import ALIF
from eprop_l2l.cells.autodiff import AutodiffTraces
from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.cells.simulate import simulate
from eprop_l2l.numerics.filters import anticausal_filter, causal_filter

from .builders import make_cell, make_trial

SPIKING_KINDS = ["lif", "alif", "cuba_lif"]  # the per-cell checks run on each (cuba_lif's own: tests/test_cuba_lif.py)


def test_lif_membrane_reset_and_refractoriness_by_hand():
    cell = LIF(n_in=1, n_rec=1, tau_m=20.0, v_th=1.0, n_ref=3, dt_ms=1.0)
    params = {"w_in": torch.tensor([[0.7]], dtype=torch.float64), "w_rec": torch.zeros(1, 1, dtype=torch.float64)}
    x = torch.ones(1, 8, 1, dtype=torch.float64)
    traj = simulate(cell, params, x)
    alpha = math.exp(-1 / 20)
    v, z, expected_v, expected_z = traj.states.v[0, :, 0], traj.outputs[0, :, 0], [], []
    v_prev, z_prev, ref = 0.0, 0.0, 0
    for _ in range(8):
        v_now = alpha * v_prev + 0.7 - 1.0 * z_prev  # reset by subtraction, one step after the spike
        z_now = 1.0 if (ref == 0 and v_now > 1.0) else 0.0
        ref = min(max(ref + 3 * int(z_now) - 1, 0), 3)
        expected_v.append(v_now)
        expected_z.append(z_now)
        v_prev, z_prev = v_now, z_now
    assert torch.allclose(v, torch.tensor(expected_v, dtype=torch.float64))
    assert torch.equal(z, torch.tensor(expected_z, dtype=torch.float64))
    assert z.sum() >= 2  # the constant drive makes it fire repeatedly ...
    spikes = torch.nonzero(z).flatten()
    assert (spikes.diff() >= 3).all()  # ... but never within n_ref steps


def test_refractory_limits_rate_to_one_over_n_ref():
    cell = LIF(n_in=1, n_rec=5, v_th=0.1, n_ref=5, dt_ms=1.0)
    params = {"w_in": torch.full((5, 1), 10.0), "w_rec": torch.zeros(5, 5)}
    traj = simulate(cell, params, torch.ones(2, 100, 1))
    assert traj.outputs.mean().item() == pytest.approx(1 / 5, abs=0.01)  # 200 Hz maximum


def test_init_has_no_self_connections_and_paper_scaling():
    g = torch.Generator().manual_seed(1)
    params = LIF(n_in=400, n_rec=300, dt_ms=1.0).init_params(g)
    assert torch.count_nonzero(torch.diagonal(params["w_rec"])) == 0
    assert params["w_in"].std().item() == pytest.approx(1 / math.sqrt(400), rel=0.02)
    assert params["w_rec"].std().item() == pytest.approx(1 / math.sqrt(300) * math.sqrt(299 / 300), rel=0.02)


def test_alif_with_no_adaptive_neurons_is_lif():
    network, params, x, *_ = make_trial(make_cell("lif", dt_ms=1.0))
    lif = simulate(network.cell, params, x)
    alif = simulate(ALIF(n_in=4, n_rec=7, v_th=0.3, n_ref=2, n_adaptive=0, dt_ms=1.0), params, x)
    assert torch.equal(lif.outputs, alif.outputs)
    assert lif.outputs.sum() > 10


def test_alif_threshold_adapts_with_own_spikes():
    cell = ALIF(n_in=1, n_rec=1, v_th=0.5, n_ref=1, tau_a=100.0, beta=0.5, dt_ms=1.0)
    params = {"w_in": torch.tensor([[0.8]]), "w_rec": torch.zeros(1, 1)}
    traj = simulate(cell, params, torch.ones(1, 200, 1))
    z = traj.outputs[0, :, 0]
    assert z[:50].sum() > z[150:].sum() > 0  # spike-frequency adaptation
    a, rho = traj.states.a[0, :, 0], math.exp(-1 / 100)
    assert torch.allclose(a[1:], rho * a[:-1] + z[:-1])


@pytest.mark.parametrize("kind", SPIKING_KINDS)
def test_gradient_paths_never_change_values(kind):
    network, params, x, *_ = make_trial(make_cell(kind))
    runs = [simulate(network.cell, params, x, paths=p) for p in ("full", "no_reset", "local", "internal")]
    for run in runs[1:]:
        assert torch.equal(run.outputs, runs[0].outputs)


@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize(("kind", "steps", "psi_steps"), [("lif", 30, 20), ("alif", 30, 20), ("cuba_lif", 40, 15)])
def test_closed_form_traces_equal_autodiff_traces(kind, steps, psi_steps, per_task):
    """e_ji^t from the hand-written recursions == tangents of ``step`` under the e-prop convention (1e-10); for
    the current-based cell the two nested presynaptic filters of ``cells/cuba_lif.py``."""
    network, params, x, *_ = make_trial(make_cell(kind), per_task=per_task, steps=steps)
    cell = network.cell
    autodiff = AutodiffTraces(cell, ("w_in", "w_rec"))
    state = cell.init_state(x.shape[0], dtype=x.dtype)
    tangents = autodiff.init(params, state)
    closed = {"w_in": cell.trace_init(params, state, cell.n_in), "w_rec": cell.trace_init(params, state, cell.n_rec)}
    worst, largest, nonzero_psi_steps = 0.0, 0.0, 0
    for t in range(x.shape[1]):
        prev = state
        state, z, tangents, elig = autodiff.step(params, prev, tangents, x[:, t])
        reference_state, reference_z = cell.step(params, prev, x[:, t])
        assert torch.equal(z, reference_z)
        for name, pre in (("w_in", x[:, t]), ("w_rec", cell.output(prev))):
            closed[name], e = cell.trace_step(params, closed[name], prev, state, pre)
            worst = max(worst, (e - elig[name]).abs().max().item())
            largest = max(largest, e.abs().max().item())
        nonzero_psi_steps += int(cell.psi(params, state).abs().sum() > 0)
    assert largest > 0.1 and nonzero_psi_steps > psi_steps
    assert worst <= 1e-10 * largest


def test_readout_run_equals_iterated_step():
    g = torch.Generator().manual_seed(3)
    for scaling in ("new", "old"):
        readout = LeakyReadout(6, 3, tau_out=15.0, input_scaling=scaling, dt_ms=1.0)
        params = readout.init_params(g, torch.float64)
        params["b_out"] = torch.randn(3, generator=g, dtype=torch.float64)
        z = (torch.rand(2, 50, 6, generator=g) < 0.2).double()
        y, ys = readout.init_state(2, torch.float64), []
        for t in range(50):
            y = readout.step(params, y, z[:, t])
            ys.append(y)
        assert torch.allclose(readout.run(params, z), torch.stack(ys, 1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("width", [5, 1100])  # narrow slices use the Toeplitz product, wide ones the recursion
@pytest.mark.parametrize("steps", [1, 33, 100])
def test_filters_equal_the_recursion(steps, width):
    g = torch.Generator().manual_seed(steps)
    x = torch.randn(2, steps, width, generator=g, dtype=torch.float64)
    initial = torch.randn(2, width, generator=g, dtype=torch.float64)
    per_neuron = torch.tensor([0.0, 0.5, 0.9, 0.99, 1.0], dtype=torch.float64).repeat(width // 5 + 1)[:width]
    for decay in (0.95, per_neuron):
        y, acc = [], initial
        for t in range(steps):
            acc = decay * acc + x[:, t]
            y.append(acc)
        assert torch.allclose(causal_filter(x, decay, initial=initial), torch.stack(y, 1), atol=1e-12, rtol=0)
        yr, acc = [None] * steps, torch.zeros_like(initial)
        for t in reversed(range(steps)):
            acc = x[:, t] + decay * acc
            yr[t] = acc
        assert torch.allclose(anticausal_filter(x, decay), torch.stack(yr, 1), atol=1e-12, rtol=0)


def test_alif_beta_made_under_a_transform_is_not_cached():
    """A β vector first asked for inside ``jacfwd`` (RTRL) would have no storage; the native loop reads it later."""
    cell = make_cell("alif")
    v = torch.zeros(cell.n_rec, dtype=torch.float64)
    jacfwd(lambda u: cell.beta_vector(u) * u)(v)
    beta = cell.beta_vector(v)
    assert beta.data_ptr() != 0 and torch.equal(beta, torch.tensor(cell.spec.beta_per_neuron(), dtype=v.dtype))
