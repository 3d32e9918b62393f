"""What a feedback matrix learns between trials is one update (``error_modules.feedback.set_source_grads``), and
the plain training loop and compare's ``RuleRunner`` both run it: an adaptive B takes the step of (W^out)ᵀ plus
decay, the other kinds learn nothing. The kinds themselves are stated once (``feedback.KINDS``)."""

from __future__ import annotations

import torch

from eprop_l2l.error_modules.feedback import (
    FEEDBACK_KINDS,
    KINDS,
    META_FEEDBACK_KINDS,
    Feedback,
    set_source_grads,
    trainable_source_params,
)
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.rules import RuleRunner, parse_rule
from eprop_l2l.inner_loop.train import RuleTraining, train_with_rule
from eprop_l2l.task_families import make_task_family
from tests.builders import make_cell, make_trial


def test_the_kinds_are_listed_once():
    assert FEEDBACK_KINDS == ("symmetric", "random", "adaptive") == tuple(KINDS)
    assert set(META_FEEDBACK_KINDS) == {"random", "symmetric"}  # adaptive needs the update between trials
    assert [Feedback(kind, 3, 2).learned_between_trials for kind in FEEDBACK_KINDS] == [False, False, True]
    assert [sorted(Feedback(kind, 3, 2).init_params(torch.Generator())) for kind in FEEDBACK_KINDS] == \
        [[], ["b_fb"], ["b_fb"]]


def test_adaptive_b_gets_the_readout_update_plus_decay():
    g = torch.Generator().manual_seed(0)
    adaptive = Feedback("adaptive", 4, 2, decay=0.25)
    leaves = trainable_source_params(adaptive, adaptive.init_params(g, torch.float64))
    w_out_grad = torch.randn(2, 4, generator=g, dtype=torch.float64)
    set_source_grads(adaptive, leaves, {"w_out": w_out_grad})
    torch.testing.assert_close(leaves["b_fb"].grad, w_out_grad.mT + 0.25 * leaves["b_fb"].detach(), rtol=0, atol=0)
    random = Feedback("random", 4, 2)
    fixed = trainable_source_params(random, random.init_params(g, torch.float64))
    set_source_grads(random, fixed, {"w_out": w_out_grad})
    assert not fixed["b_fb"].requires_grad and fixed["b_fb"].grad is None


def test_training_loop_and_compare_move_adaptive_b_alike():
    """One trial of the same task from the same B: the plain training loop (Adam over the weights and B) and
    compare's runner (Adam over B) leave the same B, which has moved."""
    family = make_task_family("sines", n_steps=40, n_in=6, dt_ms=1.0)
    network, params, *_ = make_trial(make_cell("lif", n_in=family.n_in), n_out=family.n_out, steps=40)
    params = {k: v.float() for k, v in params.items()}
    batch = family.sample(2, torch.Generator().manual_seed(3))
    runner = RuleRunner(parse_rule("eprop1(feedback=adaptive)"), network, torch.Generator().manual_seed(1), lr=1e-2)
    start = runner.source_params["b_fb"].detach().clone()
    runner.update(params, batch, Loss(family.loss))
    source_params = {"b_fb": start.clone()}
    train_with_rule(network, dict(params), family, runner.source, source_params,
                    RuleTraining(rule="eprop", lr=1e-2, n_iterations=1), torch.Generator(), fixed_batch=batch)
    assert (source_params["b_fb"] - start).abs().max() > 1e-3
    torch.testing.assert_close(source_params["b_fb"], runner.source_params["b_fb"].detach(), rtol=1e-6, atol=1e-7)
