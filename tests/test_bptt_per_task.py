"""The MAML-style inner step's per-task gradients from shared weights (``bptt_result(per_task=True)``): the
trial runs on the shared matrices and each task's dE/dW is a product over time of ∂E/∂(input current) and
the presynaptic signal. It must equal autograd through per-task copies of the weights — values, gradients and
the second-order terms that meta-training differentiates (float64)."""

import pytest
import torch

from eprop_l2l.inner_loop.bptt import bptt_result
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.build import from_experiment

from .builders import make_cell, make_trial, relative_error

PLASTIC = ("w_in", "w_rec", "w_out")
REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)


def _both(spiking_kind, paths="full", regularizer=None, gain=1.0, **cell):
    network, params, x, target, mask, g = make_trial(make_cell(spiking_kind, **cell), batch=3, steps=40,
                                                     input_gain=0.5 * gain, rec_gain=gain)
    meta = {k: v.clone().requires_grad_() for k, v in params.items()}
    copies = {k: (v.expand(3, *v.shape) if k in PLASTIC else v) for k, v in meta.items()}
    args, options = (x, target, mask, Loss("mse")), dict(plastic=PLASTIC, regularizer=regularizer, paths=paths)
    shared = bptt_result(network, meta, *args, **options, create_graph=True, per_task=True)
    per_copy = bptt_result(network, copies, *args, **options, create_graph=True)
    return meta, shared, per_copy, g


@pytest.mark.parametrize("paths", ["full", "local"])
@pytest.mark.parametrize("input_scaling", ["new", "old"])
def test_per_task_gradients_equal_per_task_copies(spiking_kind, paths, input_scaling):
    # "old" scales the cell's input by 1 − α: stronger weights keep the neurons spiking
    gain = 1.0 if input_scaling == "new" else 15.0
    meta, shared, per_copy, g = _both(spiking_kind, paths, REG, gain, input_scaling=input_scaling)
    assert torch.allclose(shared.loss, per_copy.loss, rtol=1e-13)
    for name in PLASTIC:
        assert shared.grads[name].shape == per_copy.grads[name].shape == (3, *meta[name].shape), name
        assert per_copy.grads[name].norm() > 0, name
        assert relative_error(shared.grads[name], per_copy.grads[name]) <= 1e-11, name
    # the second-order terms: one random direction through every per-task gradient, differentiated by meta
    directions = {n: torch.randn(shared.grads[n].shape, generator=g, dtype=torch.float64) for n in PLASTIC}
    names = sorted(meta)
    second = {}
    for label, result in (("shared", shared), ("copies", per_copy)):
        scalar = sum((result.grads[n] * directions[n]).sum() for n in PLASTIC)
        second[label] = torch.autograd.grad(scalar, [meta[n] for n in names], allow_unused=True)
    for name, a, b in zip(names, second["shared"], second["copies"], strict=True):
        if b is None:
            assert a is None or a.abs().max() == 0, name
            continue
        assert b.norm() > 0, name
        assert relative_error(a, b) <= 1e-10, name


def test_first_order_per_task_gradients_with_the_fast_loop(spiking_kind):
    network, params, x, target, mask, _ = make_trial(make_cell(spiking_kind), batch=3, steps=40)
    args = (x, target, mask, Loss("mse"))
    fast = bptt_result(network, params, *args, plastic=PLASTIC, fast=True, per_task=True)
    reference = bptt_result(network, {k: (v.expand(3, *v.shape) if k in PLASTIC else v) for k, v in params.items()},
                            *args, plastic=PLASTIC)
    for name in PLASTIC:
        assert relative_error(fast.grads[name], reference.grads[name]) <= 1e-11, name


def test_maml_learner_validates_under_no_grad():
    """Validation runs the MAML-style step with autograd off while the meta-parameters require gradients:
    the demonstration's gradient is still taken, and equals the one of the recorded forward."""
    learner, family, _ = from_experiment("tiny", "inner=bptt")
    meta = tree_map(lambda v: v.requires_grad_(), learner.init_meta_params(torch.Generator().manual_seed(0),
                                                                           torch.float64))
    batch = family.sample(4, torch.Generator().manual_seed(1), torch.float64)
    recorded = learner.forward(meta, batch)
    with torch.no_grad():
        validation = learner.forward(meta, batch)
    assert recorded["task_loss"].requires_grad and not validation["task_loss"].requires_grad
    assert torch.allclose(validation["task_loss"], recorded["task_loss"].detach(), rtol=1e-12)
    after, before = validation["metrics"]["mse_cart_after"], validation["metrics"]["mse_cart_before"]
    assert abs(float(after) - float(before)) > 1e-6  # the inner step changed the network


def test_stack_steps_differentiates_twice_like_torch_stack():
    """The time stacking of the Python loop (backward: one unbind) against torch.stack, to second order."""
    from eprop_l2l.cells.base import stack_steps

    g = torch.Generator().manual_seed(3)
    steps = [torch.randn(2, 3, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(5)]
    weights = torch.randn(2, 5, 3, generator=g, dtype=torch.float64)
    results = []
    for stack in (stack_steps, torch.stack):
        out = (stack(steps, 1) ** 3 * weights).sum()
        first = torch.autograd.grad(out, steps, create_graph=True)
        second = torch.autograd.grad(sum((f * f).sum() for f in first), steps)
        results.append((first, second))
    for k in (0, 1):
        assert torch.allclose(torch.cat(results[0][k]), torch.cat(results[1][k]), rtol=1e-14)
    assert torch.autograd.gradgradcheck(lambda *s: stack_steps(list(s), 1), steps)
