"""The hand-path inner objectives (inner_loop.objectives) against independent computations (float64):

* the arm's closed-form ∂E/∂ω (its Jacobian transposed and integrated) equals autograd through the kinematics;
* e-prop 1 with symmetric feedback on the hand-path gradient (``hand_gradient``, κ-filtered traces) equals the
  exact gradient of the Cartesian loss where e-prop is exact (W_rec = 0, the same reset convention);
* the Cartesian MAML step's meta-gradient equals ``higher``'s (a differentiable SGD step through the arm);
* the learned-B rule (``hand``) projects the deviation p − p*, and reads neither motor targets nor Jacobian;
* the information each objective declares, and the refusals.
"""

import dataclasses

import pytest
import torch

from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.objectives import HandLoss, InnerObjective
from eprop_l2l.meta.params import flat, nested
from eprop_l2l.runs.build import from_experiment
from eprop_l2l.task_families.arm import ArmPlant, arm_forward, arm_path_gradient

from .builders import make_cell, make_trial, relative_error

PLANT = ArmPlant(dt_ms=1.0, n_pop_per_dim=5, peak_hz=200.0, sigma=0.2, context_code="population", code_bits=16)


def hand_trial(kind="lif", steps=40, seed=0):
    """A small trial whose target is a hand path (the arm driven by other velocities), outputs in rad/s."""
    network, params, x, _, mask, _ = make_trial(make_cell(kind), steps=steps, seed=seed)
    g = torch.Generator().manual_seed(seed + 7)
    params["w_out"] = 40.0 * params["w_out"]  # joint velocities of tens of rad/s, as the arm's
    target = arm_forward(20.0 * torch.randn(x.shape[0], steps, 2, generator=g, dtype=torch.float64), dt_ms=1.0)
    return network, params, x, target, mask


def test_arm_path_gradient_is_autograd_through_the_kinematics():
    g = torch.Generator().manual_seed(3)
    omega = (15.0 * torch.randn(3, 60, 2, generator=g, dtype=torch.float64)).requires_grad_()
    deviation = torch.randn(3, 60, 2, generator=g, dtype=torch.float64)
    (expected,) = torch.autograd.grad(arm_forward(omega, dt_ms=2.0), omega, deviation)
    got = arm_path_gradient(omega.detach(), deviation, dt_ms=2.0)
    assert expected.norm() > 0
    assert relative_error(got, expected) <= 1e-12


def test_jacobian_eprop_equals_exact_cartesian_gradient_without_recurrent_weights(spiking_kind):
    network, params, x, target, mask = hand_trial(spiking_kind)
    params["w_rec"] = torch.zeros_like(params["w_rec"])
    loss = HandLoss(PLANT, gradient=True)
    symmetric = Feedback("symmetric", network.cell.n_rec, 2)
    eprop = eprop_fused(network, params, x, target, mask, loss, symmetric)  # κ: the readout's
    exact, value = bptt_grads(network, params, x, target, mask, loss, paths="no_reset")
    assert torch.allclose(eprop.loss, value, rtol=1e-12)
    for name in ("w_in", "w_out", "b_out"):
        assert exact[name].norm() > 0, name
        assert relative_error(eprop.grads[name], exact[name]) <= 1e-10, name
    # the plant-agnostic deviation is not that gradient: the Jacobian and the integration matter
    deviation = eprop_fused(network, params, x, target, mask, HandLoss(PLANT, gradient=False), symmetric)
    assert relative_error(deviation.grads["w_in"], exact["w_in"]) > 0.1


def test_cartesian_maml_meta_gradient_equals_higher():
    higher = pytest.importorskip("higher")
    from .test_maml_higher import N_TASKS, NETWORK, LearningNetwork

    learner, family, _ = from_experiment("tiny", "inner.rule=bptt", "inner.objective=hand_gradient")
    learner = dataclasses.replace(learner, fast_loop=False)
    meta = flat(learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64))
    batch = family.sample(N_TASKS, torch.Generator().manual_seed(1), torch.float64)
    leaves = {k: v.clone().requires_grad_() for k, v in meta.items()}
    out = learner.forward(nested(leaves), batch)
    names = [n for n in (*NETWORK, "log_inner_lr") if n in meta]
    ours = dict(zip(names, torch.autograd.grad(out["task_loss"], [leaves[n] for n in names]), strict=True))

    model = LearningNetwork(learner.network, {n: meta[n] for n in NETWORK if n in meta})
    log_lr = meta["log_inner_lr"].clone().requires_grad_()
    optimizer = torch.optim.SGD([getattr(model, n) for n in learner.plastic], lr=learner.inner_lr)
    hand = batch.extra["hand"]
    outputs = []
    for task in range(N_TASKS):
        one = slice(task, task + 1)
        with higher.innerloop_ctx(model, optimizer, copy_initial_weights=False,
                                  override={"lr": [log_lr.exp()]}) as (fmodel, diffopt):
            produced = arm_forward(fmodel(batch.inputs[one]), dt_ms=family.dt_ms)  # independent: no objective code
            diffopt.step(0.5 * ((produced - hand[one]) ** 2).sum())
            outputs.append(fmodel(batch.inputs[one]))
    outer, _ = learner.outer_loss(torch.cat(outputs), batch)
    oracle_leaves = [getattr(model, n) for n in model.names] + [log_lr]
    oracle = dict(zip([*model.names, "log_inner_lr"], torch.autograd.grad(outer, oracle_leaves), strict=True))
    assert torch.allclose(out["task_loss"].detach(), outer.detach(), rtol=1e-12)
    ours["w_rec"] = ours["w_rec"] * (1 - torch.eye(meta["w_rec"].shape[-1], dtype=torch.float64))
    for name, grad in oracle.items():
        assert ours[name].norm() > 0, name
        assert relative_error(ours[name], grad) <= 1e-10, name


def test_learned_feedback_projects_the_cartesian_deviation():
    network, params, x, target, mask = hand_trial()
    b = Feedback("random", network.cell.n_rec, 2)
    params["b_fb"] = b.init_params(torch.Generator().manual_seed(5), torch.float64)["b_fb"]
    result = eprop_fused(network, params, x, target, mask, HandLoss(PLANT, gradient=False), b, kappa=0.0)
    deviation = mask.unsqueeze(-1) * (arm_forward(result.outputs, dt_ms=1.0) - target)
    expected = torch.einsum("jk,btk->btj", params["b_fb"], deviation)
    assert relative_error(result.signals, expected) <= 1e-12


@pytest.mark.parametrize(("overrides", "information"), [
    ((), {"target_path", "learner_spikes", "clock"}),
    (("error_module.use_produced_path=true",), {"target_path", "learner_spikes", "clock", "produced_path"}),
    (("error_module=random_feedback",), {"motor_targets"}),
    (("inner=bptt",), {"motor_targets"}),
    (("error_module=random_feedback", "inner.objective=hand"), {"target_path", "produced_path"}),
    (("error_module=random_feedback", "error_module.feedback=symmetric", "inner.objective=hand_gradient"),
     {"target_path", "produced_path", "plant_jacobian"}),
    (("inner=bptt", "inner.objective=hand_gradient"), {"target_path", "produced_path", "plant_jacobian"}),
    # the readout's delta rule reads the objective's error even under a learned module
    (("inner.plastic=[w_in,w_rec,w_out]", "inner.objective=hand"),
     {"target_path", "learner_spikes", "clock", "produced_path"}),
])
def test_each_rule_declares_what_it_reads(overrides, information):
    learner, _, _ = from_experiment("tiny", *overrides)
    assert learner.information == information


@pytest.mark.parametrize("overrides", [
    ("error_module=random_feedback", "inner.objective=hand"),
    ("error_module=random_feedback", "error_module.feedback=symmetric", "inner.objective=hand_gradient"),
    ("inner=bptt", "inner.objective=hand_gradient"),
    ("error_module.use_produced_path=true",),
])
def test_hand_path_rules_give_the_same_update_without_motor_targets(overrides):
    """Poisoned motor targets and target angles (NaN) leave the update bit-identical: nothing reads them."""
    learner, family, _ = from_experiment("tiny", *overrides)
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    batch = family.sample(3, torch.Generator().manual_seed(1))
    poisoned = dataclasses.replace(batch, targets=torch.full_like(batch.targets, float("nan")),
                                   extra={**batch.extra, "angles": torch.full_like(batch.extra["angles"], 1e9)})
    with torch.no_grad():
        clean, _ = learner.adapt(meta, batch)
        dirty, _ = learner.adapt(meta, poisoned)
    for name in learner.plastic:
        assert torch.isfinite(clean[name]).all()
        assert torch.equal(clean[name], dirty[name]), name
    initial = meta["network"]
    assert any(not torch.equal(clean[n].expand_as(clean[n]), initial[n].expand_as(clean[n])) for n in learner.plastic)


def test_motor_rule_never_sees_the_target_path():
    learner, family, _ = from_experiment("tiny", "error_module=random_feedback")
    batch = family.sample(2, torch.Generator().manual_seed(1))
    seen = learner.withhold(batch)
    assert seen.context is None and torch.isnan(seen.extra["hand"]).all()
    assert torch.equal(seen.targets, batch.targets) and torch.equal(seen.extra["angles"], batch.extra["angles"])


def test_refusals():
    with pytest.raises(ConfigError, match="inner.objective"):
        from_experiment("tiny", "inner=bptt", "inner.objective=hand")
    with pytest.raises(ConfigError, match="inner.objective"):
        from_experiment("tiny", "inner.objective=cartesian")
    with pytest.raises(ConfigError, match="inner.objective"):
        InnerObjective("hand")  # no plant


def test_a_module_reading_the_produced_path_is_not_exported():
    """The produced path comes from the plant, which an exported rule does not hold: refused, not mis-described."""
    from eprop_l2l.hardware.rule import ExportError, describe

    learner, _, _ = from_experiment("tiny", "error_module.use_produced_path=true")
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    with pytest.raises(ExportError, match="error_module.use_produced_path"):
        describe(learner, meta)
