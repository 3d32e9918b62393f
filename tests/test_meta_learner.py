"""The outer loop differentiates through the one-shot e-prop update: its meta-gradient is checked against
central finite differences (smooth rate cells, where the surrogate is the true derivative) and, for spiking
cells, reverse mode against forward mode through the whole demonstration → update → test pipeline."""

import torch
from torch.func import jvp

from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.rate import RateRNN
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.error_modules.learned import LearnedErrorModule
from eprop_l2l.meta import params as tree
from eprop_l2l.meta.learner import MetaLearner
from eprop_l2l.task_families.base import TaskBatch

from .builders import relative_error


def tiny(kind: str, seed: int = 0, steps: int = 15, batch: int = 2, fast_loop: bool = False):
    g = torch.Generator().manual_seed(seed)
    n_in, n_rec, n_ctx = 3, 5, 4
    if kind == "rate":
        cell, em_cell = RateRNN(n_in, n_rec, tau=4.0, dt_ms=1.0), RateRNN(n_ctx + n_rec + n_in, 4, tau=3.0, dt_ms=1.0)
    else:
        cell = LIF(n_in, n_rec, v_th=0.3, n_ref=2, dt_ms=1.0)
        em_cell = LIF(n_ctx + n_rec + n_in, 4, v_th=0.3, n_ref=2, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(n_rec, 2, tau_out=5.0, dt_ms=1.0))
    module = LearnedErrorModule(em_cell, n_rec, n_context=n_ctx, n_inputs=n_in, projection_scale=2.0,
                                fast_loop=fast_loop, dt_ms=1.0)
    learner = MetaLearner(network, module, inner_lr=0.5, learn_inner_lr=True, n_inner_updates=2, fast_loop=fast_loop)
    meta = learner.init_meta_params(g, torch.float64)
    meta["network"]["w_in"] = meta["network"]["w_in"] * 2.0
    meta["error_module"]["cell"]["w_in"] = meta["error_module"]["cell"]["w_in"] * 2.0
    x = (torch.rand(batch, steps, n_in, generator=g) < 0.4).double()
    context = (torch.rand(batch, steps, n_ctx, generator=g) < 0.4).double()
    targets = torch.randn(batch, steps, 2, generator=g, dtype=torch.float64)
    task = TaskBatch(x, targets, torch.ones(batch, steps, dtype=torch.float64), context=context, dt_ms=1.0)
    return learner, meta, task, g


def test_meta_gradient_matches_finite_differences():
    learner, meta, task, g = tiny("rate")
    meta = tree.flat(meta)  # by name, one leaf at a time
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(tree.nested(leaves), task)
    grads = torch.autograd.grad(out["loss"], list(leaves.values()))
    eps = 1e-6
    for (name, value), grad in zip(meta.items(), grads, strict=True):
        direction = torch.randn(value.shape, generator=g, dtype=torch.float64)
        plus = learner.forward(tree.nested({**meta, name: value + eps * direction}), task)["loss"]
        minus = learner.forward(tree.nested({**meta, name: value - eps * direction}), task)["loss"]
        numeric = (plus - minus) / (2 * eps)
        analytic = (grad * direction).sum()
        assert analytic.abs() > 1e-6, name
        assert abs(numeric - analytic) <= 1e-6 * max(1.0, abs(analytic)), (name, numeric.item(), analytic.item())


def test_meta_gradient_reverse_equals_forward_mode_for_spiking_cells():
    learner, meta, task, g = tiny("lif", steps=25)
    meta = tree.flat(meta)
    direction = {k: torch.randn(v.shape, generator=g, dtype=torch.float64) for k, v in meta.items()}
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(tree.nested(leaves), task)
    assert out["demos"][0].trajectory.outputs.sum() > 0
    grads = torch.autograd.grad(out["loss"], list(leaves.values()))
    reverse = sum((gr * direction[k]).sum() for k, gr in zip(meta, grads, strict=True))
    _, forward = jvp(lambda m: learner.forward(m, task)["loss"], (tree.nested(meta),), (tree.nested(direction),))
    assert reverse.abs() > 1e-6
    assert relative_error(forward, reverse) <= 1e-10


def test_fast_weights_are_per_task_and_the_update_changes_the_test_trial():
    learner, meta, task, _ = tiny("lif", steps=25, batch=3)
    out = learner.forward(meta, task)
    assert out["fast"]["w_rec"].shape == (3, 5, 5) and out["fast"]["w_out"].shape == (2, 5)
    assert not torch.equal(out["fast"]["w_rec"][0], out["fast"]["w_rec"][1])
    assert torch.count_nonzero(torch.diagonal(out["fast"]["w_rec"], dim1=-2, dim2=-1)) == 0
    frozen = MetaLearner(learner.network, learner.error_module, n_inner_updates=0).forward(meta, task)
    assert not torch.allclose(frozen["y_test"], out["y_test"])


def test_meta_gradient_with_the_fast_spiking_loops_is_unchanged():
    grads = []
    for fast_loop in (False, True):
        learner, meta, task, _ = tiny("lif", steps=25, fast_loop=fast_loop)
        leaves = tree.tree_map(lambda v: v.clone().requires_grad_(), meta)
        out = learner.forward(leaves, task)
        grads.append(torch.autograd.grad(out["loss"], tree.leaves(leaves)))
    for reference, fast in zip(*grads, strict=True):
        assert reference.norm() > 0
        assert relative_error(fast, reference) <= 1e-10
