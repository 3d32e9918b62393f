"""Online e-prop's native loop (inner_loop/eprop_online_native.py) against the Python loop it replaces, the fused
execution, and the cases it leaves to the Python loop."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from eprop_l2l.error_modules.base import SignalSource
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.inner_loop import eprop_online as online_module
from eprop_l2l.inner_loop import eprop_online_native
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.eprop_online import eprop_online
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.numerics import native

from .builders import make_cell, make_trial, relative_error

REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)
NAMES = ("w_in", "w_rec", "w_out", "b_out")
BLOCK = 16  # short blocks: a 45-step trial crosses two block boundaries and ends in a partial block
STEPS = 45
MSE = Loss()


@pytest.fixture(autouse=True)
def short_blocks(monkeypatch):
    if native.module() is None:
        pytest.fail("the native kernels did not build on this machine (CI builds them; see numerics/native)")
    monkeypatch.setattr(eprop_online_native, "BLOCK_STEPS", BLOCK)


@pytest.fixture
def native_calls(monkeypatch):
    """How often the native loop ran (a test of equality must not compare the Python loop with itself)."""
    calls = []
    original = online_module.native_sums

    def spy(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(online_module, "native_sums", spy)
    return calls


def _trial(kind, feedback, dtype=torch.float64, per_task=False, steps=STEPS):
    network, params, x, target, mask, g = make_trial(make_cell(kind), per_task=per_task, steps=steps, dtype=dtype)
    source = Feedback(feedback, network.cell.n_rec, 2)
    return network, params, x, target, mask, source, source.init_params(g, dtype)


def _native_and_python(trial, loss=MSE, **options):
    network, params, x, target, mask, source, source_params = trial
    args = (network, params, x, target, mask, loss, source)
    fast = eprop_online(*args, source_params=source_params, **options)
    with native.disabled():
        reference = eprop_online(*args, source_params=source_params, **options)
    return fast, reference


VARIANTS = {  # κ-filtered traces with the regulariser on shared weights; unfiltered, unregularised, per task
    "filtered_regularised_shared": (dict(regularizer=REG), False),
    "unfiltered_plain_per_task": (dict(kappa=0.0), True),
}


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("feedback", ["symmetric", "random", "adaptive"])
def test_native_equals_python_float64(spiking_kind, feedback, variant, native_calls):
    options, per_task = VARIANTS[variant]
    fast, reference = _native_and_python(_trial(spiking_kind, feedback, per_task=per_task), **options)
    assert native_calls == [1]
    assert relative_error(fast.loss, reference.loss) <= 1e-12
    for name in NAMES:
        assert reference.grads[name].norm() > 0 and fast.grads[name].shape == reference.grads[name].shape
        assert relative_error(fast.grads[name], reference.grads[name]) <= 1e-12, name


@pytest.mark.parametrize("per_task", [False, True])
def test_native_equals_python_float32(spiking_kind, per_task, native_calls):
    fast, reference = _native_and_python(_trial(spiking_kind, "random", torch.float32, per_task), regularizer=REG)
    assert native_calls == [1]
    for name in NAMES:
        assert relative_error(fast.grads[name], reference.grads[name]) <= 1e-5, name


def test_cross_entropy_and_partial_plasticity(native_calls):
    """The loss's own error and value serve the native loop too; groups that are not plastic are not computed."""
    trial = _trial("alif", "symmetric")
    fast, reference = _native_and_python(trial, loss=Loss("cross_entropy"), plastic=("w_rec", "b_out"),
                                         regularizer=REG)
    assert native_calls == [1] and set(fast.grads) == {"w_rec", "b_out"}
    assert relative_error(fast.loss, reference.loss) <= 1e-12
    for name in fast.grads:
        assert relative_error(fast.grads[name], reference.grads[name]) <= 1e-12, name


def test_native_equals_fused(spiking_kind, native_calls):
    network, params, x, target, mask, source, source_params = _trial(spiking_kind, "random", per_task=True, steps=70)
    common = dict(source_params=source_params, regularizer=REG)
    fused = eprop_fused(network, params, x, target, mask, Loss(), source, **common)
    fast = eprop_online(network, params, x, target, mask, Loss(), source, **common)
    assert native_calls == [1]
    for name in NAMES:
        assert relative_error(fast.grads[name], fused.grads[name]) <= 1e-10, name


def test_state_does_not_grow_with_the_trial(monkeypatch):
    """Memory independent of T, by construction: every tensor the native loop allocates per block spans at most
    BLOCK steps, and the state carried between blocks has the same shapes for a trial twice as long."""
    seen = {"block_steps": [], "state": []}
    original = eprop_online_native._GroupTraces.block

    def spy(self, pre, psi, signal, kappa):
        seen["block_steps"].append(pre.shape[1])
        original(self, pre, psi, signal, kappa)
        seen["state"].append(tuple(tuple(t.shape) for t in (self.pre_trace, self.filtered, self.eps_a, self.acc)))

    monkeypatch.setattr(eprop_online_native._GroupTraces, "block", spy)
    shapes = []
    for steps in (STEPS, 2 * STEPS):
        seen["state"].clear()
        network, params, x, target, mask, source, source_params = _trial("alif", "random", steps=steps)
        eprop_online(network, params, x, target, mask, Loss(), source, source_params=source_params)
        shapes.append(set(seen["state"]))
    assert max(seen["block_steps"]) == BLOCK and min(seen["block_steps"]) < BLOCK
    assert shapes[0] == shapes[1] and len(shapes[0]) == 2  # one shape record per weight group, whatever T
    batch, n_rec, n_in = x.shape[0], network.cell.n_rec, network.cell.n_in
    assert ((batch, n_in), (batch, n_rec, n_in), (batch, n_rec, n_in), (n_rec, n_in)) in shapes[0]


class _Relay(SignalSource):
    """A source that is not a broadcast feedback (the same signals): the native loop does not serve it."""

    def __init__(self, feedback):
        self.feedback = feedback

    def step(self, params, state, obs):
        return self.feedback.step(params, state, obs)


def test_other_cases_take_the_python_loop(native_calls):
    network, params, x, target, mask, source, source_params = _trial("lif", "random")
    all_params = {**params, **source_params}
    assert eprop_online_native.applies(network, params, all_params, source, "closed_form", x, target, mask)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    refused = {
        "autodiff traces": (network, params, all_params, source, "autodiff"),
        "a source that is not broadcast feedback": (network, params, all_params, _Relay(source), "closed_form"),
        "parameters autograd records": (network, leaves, {**leaves, **source_params}, source, "closed_form"),
        "a cell without the native loop": (dataclasses.replace(network, cell=_Lif(**_fields(network.cell))), params,
                                           all_params, source, "closed_form"),
        "mixed dtypes": (network, params, {**all_params, "b_fb": source_params["b_fb"].float()}, source,
                         "closed_form"),
    }
    for why, args in refused.items():
        assert not eprop_online_native.applies(*args, x, target, mask), why
    with native.disabled():
        assert not eprop_online_native.applies(network, params, all_params, source, "closed_form", x, target, mask)
    relayed = eprop_online(network, params, x, target, mask, Loss(), _Relay(source), source_params=source_params)
    assert native_calls == []
    direct = eprop_online(network, params, x, target, mask, Loss(), source, source_params=source_params)
    assert native_calls == [1]
    for name in NAMES:
        assert relative_error(direct.grads[name], relayed.grads[name]) <= 1e-12, name


def _fields(cell):
    return {f.name: getattr(cell, f.name) for f in dataclasses.fields(cell) if f.init}


@dataclasses.dataclass(frozen=True)
class _Lif(type(make_cell("lif"))):
    """A subclass may change the step or the traces: only LIF and ALIF themselves take the native loop."""
