"""An independent oracle for the MAML-style inner step (``inner.rule=bptt``, and OSTL's step ``inner.rule=ostl``;
LIF and current-based LIF learning networks): the meta-gradient that
``higher`` (facebookresearch/higher 0.2.1, a differentiable SGD step on a patched ``nn.Module``) computes
equals ours, ``torch.autograd.grad`` of ``MetaLearner.forward(meta, batch)["task_loss"]`` (float64, ≤ 1e-10).

Both sides use the same definitions: the demonstration loss is the inner loop's ``Loss("mse")`` summed over
time and outputs without rate regulariser (``bptt_result`` in ``MetaLearner.adapt``), one SGD step per task at
the learner's (meta-learned) inner learning rate on the plastic weights only, and the outer loss is the
learner's ``outer_loss`` of the test trial (``task_loss``: the rate regulariser is left out of both). Our side
expands the initial weights to per-task fast weights in one batched step; the oracle adapts each task in its
own ``innerloop_ctx``. Spiking recurrent weights have no self-connections (their diagonal is not a parameter:
``mask_self_connections``), so the oracle's module uses ``W^rec·(1 − I)`` and the diagonal of our w_rec
meta-gradient is left out of the comparison.
"""

import dataclasses

import pytest
import torch
from torch import nn

from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.meta.params import flat, nested
from eprop_l2l.runs.build import from_experiment

from .builders import relative_error

higher = pytest.importorskip("higher")

NETWORK = ("w_in", "w_rec", "w_out", "b_out")
N_TASKS = 4


class LearningNetwork(nn.Module):
    """The learning network as an ``nn.Module``: its weights are parameters, its forward is ``network.run``."""

    def __init__(self, network, weights: dict[str, torch.Tensor]):
        super().__init__()
        self.network = network
        self.names = tuple(weights)
        for name, value in weights.items():
            setattr(self, name, nn.Parameter(value.detach().clone()))

    def forward(self, x: torch.Tensor, paths: str = "full") -> torch.Tensor:
        params = {name: getattr(self, name) for name in self.names}
        eye = torch.eye(params["w_rec"].shape[-1], dtype=x.dtype)
        params["w_rec"] = params["w_rec"] * (1 - eye)  # no self-connections
        return self.network.run(params, x, paths=paths)[1]


def setup(fast_loop: bool, rule: str = "bptt", cell: str = "lif"):
    learner, family, _ = from_experiment("tiny", f"inner.rule={rule}", f"model={cell}")
    learner = dataclasses.replace(learner, fast_loop=fast_loop)
    assert learner.inner_rule == rule and learner.n_inner_updates == 1
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64))  # by name
    batch = family.sample(N_TASKS, torch.Generator().manual_seed(1), torch.float64)
    return learner, meta, batch


def our_meta_gradient(learner, meta, batch):
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(nested(leaves), batch)
    names = [n for n in (*NETWORK, "log_inner_lr") if n in meta]
    grads = dict(zip(names, torch.autograd.grad(out["task_loss"], [leaves[n] for n in names]), strict=True))
    return grads, out["task_loss"].detach()


def higher_meta_gradient(learner, meta, batch, first_order: bool = False, paths: str = "full"):
    model = LearningNetwork(learner.network, {n: meta[n] for n in NETWORK if n in meta})
    if learner.learn_inner_lr:
        log_lr = meta["log_inner_lr"].clone().requires_grad_()
        lr = log_lr.exp()
    else:
        log_lr, lr = None, torch.tensor(learner.inner_lr, dtype=torch.float64)
    optimizer = torch.optim.SGD([getattr(model, n) for n in learner.plastic], lr=learner.inner_lr)
    demonstration_loss = Loss("mse")
    callback = (lambda grads: [g.detach() for g in grads]) if first_order else None
    outputs = []
    for task in range(N_TASKS):
        one = slice(task, task + 1)
        x, target, mask = batch.inputs[one], batch.targets[one], batch.mask[one]
        with higher.innerloop_ctx(model, optimizer, copy_initial_weights=False,
                                  override={"lr": [lr]}) as (fmodel, diffopt):
            diffopt.step(demonstration_loss.value(fmodel(x, paths=paths), target, mask), grad_callback=callback)
            outputs.append(fmodel(x))  # the test trial, with the adapted weights
    outer, _ = learner.outer_loss(torch.cat(outputs), batch)
    leaves = [getattr(model, n) for n in model.names] + ([log_lr] if log_lr is not None else [])
    names = [*model.names] + (["log_inner_lr"] if log_lr is not None else [])
    return dict(zip(names, torch.autograd.grad(outer, leaves), strict=True)), outer.detach()


@pytest.mark.parametrize("fast_loop", [True, False])
def test_maml_meta_gradient_equals_higher(fast_loop):
    learner, meta, batch = setup(fast_loop)
    ours, ours_loss = our_meta_gradient(learner, meta, batch)
    oracle, oracle_loss = higher_meta_gradient(learner, meta, batch)
    assert torch.allclose(ours_loss, oracle_loss, rtol=1e-12)
    assert set(oracle) == set(ours) and "log_inner_lr" in ours  # the tiny preset meta-learns the inner lr
    off_diagonal = 1 - torch.eye(meta["w_rec"].shape[-1], dtype=torch.float64)
    ours["w_rec"] = ours["w_rec"] * off_diagonal
    assert oracle["w_rec"].diagonal().abs().max() == 0
    for name, grad in oracle.items():
        assert ours[name].norm() > 0, name
        assert relative_error(ours[name], grad) <= 1e-10, name


@pytest.mark.parametrize("rule, cell", [("ostl", "lif"), ("bptt", "cuba_lif"), ("ostl", "cuba_lif")])
def test_ostl_and_current_based_meta_gradients_equal_higher(rule, cell):
    """OSTL's step is the demonstration's gradient with the coupling between neurons cut (``paths="internal"``):
    the oracle differentiates the same model run on those paths; the current-based cell goes through both."""
    learner, meta, batch = setup(False, rule, cell)
    ours, ours_loss = our_meta_gradient(learner, meta, batch)
    oracle, oracle_loss = higher_meta_gradient(learner, meta, batch, paths="internal" if rule == "ostl" else "full")
    assert torch.allclose(ours_loss, oracle_loss, rtol=1e-12)
    ours["w_rec"] = ours["w_rec"] * (1 - torch.eye(meta["w_rec"].shape[-1], dtype=torch.float64))
    for name, grad in oracle.items():
        assert ours[name].norm() > 0, name
        assert relative_error(ours[name], grad) <= 1e-10, name
    if rule == "ostl":  # and it is not BPTT's meta-gradient
        full, _ = higher_meta_gradient(learner, meta, batch)
        assert relative_error(full["w_rec"], oracle["w_rec"]) > 1e-3


def test_the_second_order_term_matters():
    """Guard against a vacuous comparison: first-order MAML (demonstration gradient detached) differs."""
    learner, meta, batch = setup(fast_loop=False)
    exact, _ = higher_meta_gradient(learner, meta, batch)
    first_order, _ = higher_meta_gradient(learner, meta, batch, first_order=True)
    for name in ("w_in", "w_rec"):
        assert relative_error(first_order[name], exact[name]) > 0.1, name
