"""The spiking time loop with a hand-written backward gives the reference loop's values and gradients."""

import contextlib

import pytest
import torch

from eprop_l2l.cells.simulate import simulate
from eprop_l2l.numerics import native

from .builders import make_cell, make_trial, relative_error


@pytest.mark.parametrize("paths", ["full", "no_reset", "local"])
@pytest.mark.parametrize("per_task", [False, True])
@pytest.mark.parametrize("scaling", ["new", "old"])
@pytest.mark.parametrize("kernels", ["native", "python"])
def test_fast_loop_matches_reference(spiking_kind, paths, per_task, scaling, kernels):
    """Both executions of the fast loop — the native kernels and the Python loop over the cell's own step —
    against autograd through the reference loop."""
    if kernels == "native" and native.module() is None:
        pytest.fail("the native kernels did not build on this machine")
    with native.disabled() if kernels == "python" else contextlib.nullcontext():
        check_fast_loop(spiking_kind, paths, per_task, scaling, exact_forward=kernels == "python")


def check_fast_loop(spiking_kind, paths, per_task, scaling, exact_forward):
    cell = make_cell(spiking_kind, input_scaling=scaling)
    network, params, x, target, mask, g = make_trial(cell, per_task=per_task, steps=40,
                                                     input_gain=0.5 if scaling == "new" else 10.0)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    probes = None
    results = []
    for fast in (False, True):
        trajectory = simulate(cell, leaves, x, paths=paths, fast=fast)
        states = trajectory.states
        if probes is None:
            probes = [torch.randn(f.shape, generator=g, dtype=f.dtype) for f in states]
        y = network.readout.run(leaves, trajectory.outputs)
        objective = sum((p * f).sum() for p, f in zip(probes, states, strict=True)) + ((y - target) ** 2).sum()
        grads = torch.autograd.grad(objective, [leaves["w_in"], leaves["w_rec"], leaves["w_out"]])
        results.append((states, grads))
    (ref_states, ref_grads), (fast_states, fast_grads) = results
    for name, a, b in zip(ref_states._fields, ref_states, fast_states, strict=True):
        if exact_forward or name in ("z", "ref"):
            assert torch.equal(a, b), name  # the Python loop is the cell's own step; spikes are identical anyway
        else:  # the native loop sums the recurrent input event by event (another rounding order)
            assert relative_error(a, b) <= 1e-12, name
    assert ref_states.z.sum() > 0
    for a, b in zip(fast_grads, ref_grads, strict=True):
        assert b.norm() > 0
        assert relative_error(a, b) <= 1e-10
