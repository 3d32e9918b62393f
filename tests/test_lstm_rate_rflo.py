"""LSTM and leaky rate cells, and RFLO: closed-form traces = forward-mode autodiff traces, fused = online e-prop,
symmetric e-prop = BPTT with local paths, RTRL = BPTT, RFLO online = fused = the spec's equations, RFLO learns."""

import math

import pytest
import torch

from eprop_l2l.cells.autodiff import AutodiffTraces
from eprop_l2l.cells.lstm import LSTM
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.rate import RateRNN
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.rflo import rflo_fused, rflo_online
from eprop_l2l.inner_loop.rtrl import rtrl_grads

F64 = torch.float64
TOL = 1e-10
N_IN, N_OUT, BATCH = 4, 2, 3


def max_rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |a − b| relative to max |b|."""
    assert a.shape == b.shape, (a.shape, b.shape)
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


def make_cell(kind: str):
    return LSTM(n_in=N_IN, n_rec=5) if kind == "lstm" else RateRNN(n_in=N_IN, n_rec=6, tau=5.0, dt_ms=1.0)


def plastic_of(cell) -> tuple[str, ...]:
    rec = ("w_in", "w_rec", "bias") if isinstance(cell, LSTM) else ("w_in", "w_rec")
    return rec + ("w_out", "b_out")


def make_trial(kind: str, per_task: bool = False, steps: int = 30, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    cell = make_cell(kind)
    network = RecurrentNetwork(cell, LeakyReadout(cell.n_rec, N_OUT, dt_ms=1.0))
    params = network.init_params(g, F64)
    params["w_in"] = 2.0 * params["w_in"]
    params["b_out"] = 0.1 * torch.randn(N_OUT, generator=g, dtype=F64)
    if "bias" in params:
        params["bias"] = params["bias"] + 0.3 * torch.randn(params["bias"].shape, generator=g, dtype=F64)
    if per_task:
        params = {k: v.expand(BATCH, *v.shape) + 0.1 * torch.randn(BATCH, *v.shape, generator=g, dtype=F64)
                  for k, v in params.items()}
    x = torch.randn(BATCH, steps, N_IN, generator=g, dtype=F64)
    target = torch.randn(BATCH, steps, N_OUT, generator=g, dtype=F64)
    mask = (torch.rand(BATCH, steps, generator=g) < 0.8).to(F64)
    return network, params, x, target, mask, g


# --- dynamics -------------------------------------------------------------------------------------------------
def test_lstm_step_equals_torch_lstm_cell():
    network, params, x, *_ = make_trial("lstm")
    cell = network.cell
    ref = torch.nn.LSTMCell(N_IN, cell.n_rec, dtype=F64)
    with torch.no_grad():
        ref.weight_ih.copy_(params["w_in"])
        ref.weight_hh.copy_(params["w_rec"])
        ref.bias_ih.copy_(params["bias"])
        ref.bias_hh.zero_()
    trajectory, _ = network.run(params, x)
    h = c = torch.zeros(BATCH, cell.n_rec, dtype=F64)
    for t in range(x.shape[1]):
        h, c = ref(x[:, t], (h, c))
        assert torch.allclose(trajectory.states.h[:, t], h, atol=1e-12, rtol=0)
        assert torch.allclose(trajectory.states.c[:, t], c, atol=1e-12, rtol=0)


def test_lstm_init_params_forget_bias():
    cell = LSTM(n_in=3, n_rec=4, forget_bias=2.5)
    p = cell.init_params(torch.Generator().manual_seed(0), F64)
    assert p["w_in"].shape == (16, 3) and p["w_rec"].shape == (16, 4) and p["bias"].shape == (16,)
    assert torch.equal(p["bias"][4:8], torch.full((4,), 2.5, dtype=F64))
    assert p["bias"][:4].abs().sum() == 0 and p["bias"][8:].abs().sum() == 0


def test_rate_step_is_the_leaky_rate_equation():
    network, params, x, *_ = make_trial("rate")
    cell = network.cell
    trajectory, _ = network.run(params, x)
    h = torch.zeros(BATCH, cell.n_rec, dtype=F64)
    for t in range(x.shape[1]):
        r_prev = torch.tanh(h)
        h = (1 - 1 / 5.0) * h + (1 / 5.0) * (r_prev @ params["w_rec"].T + x[:, t] @ params["w_in"].T)
        assert torch.allclose(trajectory.states.h[:, t], h, atol=1e-13, rtol=0)
    assert torch.allclose(trajectory.outputs, torch.tanh(trajectory.states.h))


# --- closed-form traces = forward-mode autodiff traces -------------------------------------------------------
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "rate"])
def test_closed_form_traces_equal_autodiff(kind, per_task):
    network, params, x, *_ = make_trial(kind, per_task)
    cell = network.cell
    names = tuple(n for n in plastic_of(cell) if n in ("w_in", "w_rec", "bias"))
    autodiff = AutodiffTraces(cell, names)
    state = cell.init_state(BATCH, dtype=F64)
    tangents = autodiff.init(params, state)
    n_pre = {"w_in": N_IN, "w_rec": cell.n_rec, "bias": 1}
    traces = {n: cell.trace_init(params, state, n_pre[n]) for n in names}
    worst = {n: 0.0 for n in names}
    for t in range(x.shape[1]):
        prev = state
        state, _, tangents, reference = autodiff.step(params, prev, tangents, x[:, t])
        pre = {"w_in": x[:, t], "w_rec": cell.output(prev), "bias": torch.ones(BATCH, 1, dtype=F64)}
        for n in names:
            traces[n], e = cell.trace_step(params, traces[n], prev, state, pre[n])
            assert e.shape == (BATCH, cell.rows_per_neuron * cell.n_rec, n_pre[n])
            worst[n] = max(worst[n], max_rel(e, reference[n]))
    assert max(worst.values()) <= TOL, worst


# --- fused = online (closed form) = online (autodiff) ---------------------------------------------------------
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "rate"])
def test_fused_equals_online(kind, per_task):
    network, params, x, target, mask, g = make_trial(kind, per_task)
    plastic = plastic_of(network.cell)
    source = Feedback("random", network.cell.n_rec, N_OUT)
    sp = source.init_params(g, F64)
    fused = eprop_fused(network, params, x, target, mask, Loss(), source, source_params=sp, plastic=plastic)
    online = eprop_online(network, params, x, target, mask, Loss(), source, source_params=sp, plastic=plastic)
    auto = eprop_online(network, params, x, target, mask, Loss(), source, source_params=sp, plastic=plastic,
                        traces="autodiff")
    assert torch.allclose(fused.loss, online.loss, rtol=1e-12)
    for name in plastic:
        assert online.grads[name].shape == params[name].shape, name
        assert online.grads[name].abs().max() > 0, name
        assert max_rel(auto.grads[name], online.grads[name]) <= TOL, name
        assert max_rel(online.grads[name], fused.grads[name]) <= TOL, name


# --- symmetric e-prop = BPTT with local paths; RTRL = BPTT ----------------------------------------------------
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("kind", ["lstm", "rate"])
def test_symmetric_eprop_equals_local_bptt(kind, per_task):
    network, params, x, target, mask, _ = make_trial(kind, per_task)
    plastic = plastic_of(network.cell)
    source = Feedback("symmetric", network.cell.n_rec, N_OUT)
    eprop = eprop_online(network, params, x, target, mask, Loss(), source, source_params=None, plastic=plastic)
    local, _ = bptt_grads(network, params, x, target, mask, Loss(), plastic=plastic, paths="local")
    full, _ = bptt_grads(network, params, x, target, mask, Loss(), plastic=plastic, paths="full")
    for name in plastic:
        assert max_rel(eprop.grads[name], local[name]) <= TOL, name
    assert max_rel(local["w_rec"], full["w_rec"]) > 1e-3  # e-prop is an approximation: the paths matter


@pytest.mark.parametrize("kind", ["lstm", "rate"])
def test_rtrl_equals_bptt(kind):
    network, params, x, target, mask, _ = make_trial(kind, steps=12)
    plastic = plastic_of(network.cell)
    exact, value = bptt_grads(network, params, x, target, mask, Loss(), plastic=plastic)
    forward, value_rtrl = rtrl_grads(network, params, x, target, mask, Loss(), plastic=plastic)
    assert torch.allclose(value, value_rtrl, rtol=1e-12)
    for name in plastic:
        assert max_rel(forward[name], exact[name]) <= TOL, name


# --- RFLO -----------------------------------------------------------------------------------------------------
def rflo_reference(network, params, x, error_signal):
    """The spec's equations literally, shared weights: p_ij^t = α p_ij^{t-1} + (dt/τ) φ'(h_i^{t-1}) pre_j^t,
    p̄ = F_κ(p), ΔW = Σ_t L_i^t p̄_ij^t with pre = φ(h^{t-1}) (W^rec) or x^t (W^in)."""
    cell, kappa = network.cell, network.readout.kappa
    alpha, s = 1 - cell.dt_ms / cell.tau, cell.dt_ms / cell.tau
    trajectory, _ = network.run(params, x)
    h = trajectory.states.h
    h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], 1)
    grads = {}
    for name, pre in (("w_in", x), ("w_rec", torch.tanh(h_prev))):
        p = torch.zeros(x.shape[0], cell.n_rec, pre.shape[-1], dtype=F64)
        p_bar, acc = torch.zeros_like(p), torch.zeros_like(p)
        for t in range(x.shape[1]):
            dphi = 1 - torch.tanh(h_prev[:, t]) ** 2
            p = alpha * p + s * dphi[:, :, None] * pre[:, t, None, :]
            p_bar = kappa * p_bar + p
            acc = acc + error_signal[:, t, :, None] * p_bar
        grads[name] = acc.sum(0)
    return grads


@pytest.mark.parametrize("per_task", [False, True])
def test_rflo_online_equals_fused(per_task):
    network, params, x, target, mask, g = make_trial("rate", per_task, steps=40)
    source = Feedback("random", network.cell.n_rec, N_OUT)
    sp = source.init_params(g, F64)
    fused = rflo_fused(network, params, x, target, mask, Loss(), source, source_params=sp)
    online = rflo_online(network, params, x, target, mask, Loss(), source, source_params=sp)
    eprop = eprop_fused(network, params, x, target, mask, Loss(), source, source_params=sp)
    assert torch.allclose(fused.loss, online.loss, rtol=1e-12)
    for name in ("w_in", "w_rec", "w_out", "b_out"):
        assert fused.grads[name].shape == params[name].shape
        assert fused.grads[name].abs().max() > 0
        assert max_rel(online.grads[name], fused.grads[name]) <= TOL, name
    for name in ("w_out", "b_out"):  # the readout follows the exact delta rule, as in e-prop
        assert max_rel(eprop.grads[name], fused.grads[name]) <= TOL, name
    for name in ("w_in", "w_rec"):  # RFLO's trace is not e-prop's (φ' of the previous step, inside the filter)
        assert max_rel(eprop.grads[name], fused.grads[name]) > 1e-3, name


def test_rflo_matches_the_spec_equations():
    network, params, x, target, mask, g = make_trial("rate", steps=40)
    source = Feedback("random", network.cell.n_rec, N_OUT)
    sp = source.init_params(g, F64)
    fused = rflo_fused(network, params, x, target, mask, Loss(), source, source_params=sp)
    _, y = network.run(params, x)
    signal = Loss().error(y, target, mask) @ sp["b_fb"].T
    reference = rflo_reference(network, params, x, signal)
    for name in ("w_in", "w_rec"):
        assert max_rel(fused.grads[name], reference[name]) <= TOL, name


def test_rflo_without_readout_filter():
    network, params, x, target, mask, g = make_trial("rate", steps=40)
    source = Feedback("random", network.cell.n_rec, N_OUT)
    sp = source.init_params(g, F64)
    fused = rflo_fused(network, params, x, target, mask, Loss(), source, source_params=sp, kappa=0.0)
    online = rflo_online(network, params, x, target, mask, Loss(), source, source_params=sp, kappa=0.0)
    filtered = rflo_fused(network, params, x, target, mask, Loss(), source, source_params=sp)
    for name in ("w_in", "w_rec"):
        assert max_rel(online.grads[name], fused.grads[name]) <= TOL, name
        assert max_rel(filtered.grads[name], fused.grads[name]) > 1e-3, name


def test_rflo_learns_a_smooth_target():
    """50 leaky rate units driven by 10 fixed input pulses learn a sum of two sines with RFLO + Adam."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the problem is tiny: more threads only add contention
    try:
        steps, n_in, n_rec = 200, 10, 50
        g = torch.Generator().manual_seed(0)
        network = RecurrentNetwork(RateRNN(n_in, n_rec, tau=10.0, dt_ms=1.0),
                                   LeakyReadout(n_rec, 1, tau_out=5.0, init_scale=0.0, dt_ms=1.0))
        params = {k: v.requires_grad_() for k, v in network.init_params(g, F64).items()}
        t = torch.arange(steps, dtype=F64)
        target = (0.6 * torch.sin(2 * math.pi * t / 60) + 0.4 * torch.sin(2 * math.pi * t / 25 + 1.0)).reshape(1, -1, 1)
        x = torch.zeros(1, steps, n_in, dtype=F64)
        for k, onset in enumerate(torch.randperm(steps - 10, generator=g)[:n_in].tolist()):
            x[0, onset : onset + 5, k] = 1.0
        mask = torch.ones(1, steps, dtype=F64)
        source = Feedback("random", n_rec, 1)
        sp = source.init_params(g, F64)
        optimiser = torch.optim.Adam([{"params": [params["w_out"], params["b_out"]], "lr": 1e-2},
                                      {"params": [params["w_in"], params["w_rec"]], "lr": 1e-3}])
        w_rec0 = params["w_rec"].detach().clone()
        history = []
        for _ in range(150):
            with torch.no_grad():
                result = rflo_fused(network, params, x, target, mask, Loss(), source, source_params=sp)
            history.append((((result.outputs - target) ** 2).mean() / target.var(unbiased=False)).item())
            optimiser.zero_grad()
            for name, grad in result.grads.items():
                params[name].grad = grad
            optimiser.step()
        assert 0.9 < history[0] < 1.1  # W^out = 0: the output is silent
        assert history[-1] < 0.3, history[-1]
        assert (params["w_rec"].detach() - w_rec0).abs().max() > 1e-2  # the recurrent weights did learn
    finally:
        torch.set_num_threads(threads)


# --- errors ---------------------------------------------------------------------------------------------------
def test_lstm_bad_size_raises():
    with pytest.raises(ConfigError, match="n_rec"):
        LSTM(n_in=3, n_rec=0)
    with pytest.raises(ConfigError, match="forget_bias"):
        LSTM(n_in=3, n_rec=2, forget_bias=float("nan"))


def test_rate_bad_tau_raises():
    with pytest.raises(ConfigError, match="tau"):
        RateRNN(n_in=3, n_rec=4, tau=-1.0, dt_ms=1.0)
    with pytest.raises(ConfigError, match="tau"):
        RateRNN(n_in=3, n_rec=4, tau=0.5, dt_ms=1.0)  # leak 1 − dt/τ would be negative
    with pytest.raises(ConfigError, match="nonlinearity"):
        RateRNN(n_in=3, n_rec=4, nonlinearity="relu", dt_ms=1.0)


def test_rflo_needs_a_rate_network():
    network, params, x, target, mask, g = make_trial("lstm")
    source = Feedback("random", network.cell.n_rec, N_OUT)
    with pytest.raises(ConfigError, match="rflo.cell"):
        rflo_fused(network, params, x, target, mask, Loss(), source, source_params=source.init_params(g, F64))
