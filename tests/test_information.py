"""The information contract: every inner rule declares what it is given of the demonstration, never reads
anything else (poisoned targets leave an undeclaring rule's update unchanged), and the declaration is recorded
with every evaluation."""

import dataclasses
import json

import pytest
import torch

from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.information import INFORMATION, describe, withhold
from eprop_l2l.meta.learner import MetaLearner

from .test_meta_learner import tiny


def _poisoned(task):
    return dataclasses.replace(task, targets=torch.full_like(task.targets, float("nan")))


@pytest.mark.parametrize("use_spikes", [True, False])  # e-prop 2 and the natural e-prop input set
def test_a_learned_error_module_gives_the_same_update_when_the_motor_targets_are_nan(use_spikes):
    learner, meta, task, _ = tiny("lif")
    if not use_spikes:
        module = dataclasses.replace(learner.error_module, use_spikes=False,
                                     cell=dataclasses.replace(learner.error_module.cell,
                                                              n_in=learner.error_module.cell.n_in - 5))
        learner = dataclasses.replace(learner, error_module=module)
        meta = learner.init_meta_params(torch.Generator().manual_seed(0), torch.float64)
    assert "motor_targets" not in learner.information
    clean, _ = learner.adapt(meta, task)
    poisoned, _ = learner.adapt(meta, _poisoned(task))
    for name in learner.plastic:
        assert torch.isfinite(clean[name]).all()
        assert torch.equal(clean[name], poisoned[name]), name
    # the test trial's module activity (rate regulariser) is also blind to them: same meta-loss terms
    assert torch.equal(learner.forward(meta, task)["reg"], learner.forward(meta, _poisoned(task))["reg"])


def test_a_rule_that_reads_what_it_did_not_declare_is_caught():
    learner, meta, task, _ = tiny("lif")
    feedback = Feedback("random", 5, 2)

    class Undeclared(Feedback):  # reads the output error y − y* but claims not to
        information = frozenset()
        reads_error = False

    honest = dataclasses.replace(learner, error_module=feedback)
    cheat = dataclasses.replace(learner, error_module=Undeclared("random", 5, 2))
    meta = honest.init_meta_params(torch.Generator().manual_seed(0), torch.float64)
    fast_honest, _ = honest.adapt(meta, task)
    fast_cheat, _ = cheat.adapt(meta, task)
    assert torch.isfinite(fast_honest["w_rec"]).all()
    assert not torch.isfinite(fast_cheat["w_rec"]).all()  # the withheld targets reached its update


def test_each_rule_declares_what_it_reads():
    learner, _, _, _ = tiny("lif")
    assert learner.information == {"target_path", "learner_spikes", "clock"}
    assert dataclasses.replace(learner, inner_rule="bptt").information == {"motor_targets"}
    assert dataclasses.replace(learner, error_module=Feedback("symmetric", 5, 2)).information == {"motor_targets"}
    assert describe(frozenset({"clock", "target_path"})) == "target_path, clock"
    with pytest.raises(ValueError, match="unknown information"):
        class Odd(Feedback):
            information = frozenset({"the answer"})
        _ = MetaLearner(learner.network, Odd("random", 5, 2)).information


def test_withhold_removes_exactly_the_undeclared_fields():
    _, _, task, _ = tiny("lif")
    seen = withhold(task, frozenset(INFORMATION))
    assert seen.targets is task.targets and seen.context is task.context
    seen = withhold(task, frozenset())
    assert torch.isnan(seen.targets).all() and seen.context is None
    assert torch.equal(seen.inputs, task.inputs) and torch.equal(seen.mask, task.mask)


def test_the_declaration_is_recorded_in_metrics_and_printed(tmp_path):
    from eprop_l2l.config.compose import load_config
    from eprop_l2l.runs.build import build_family, build_learner
    from eprop_l2l.runs.evaluation import evaluate_meta, format_table

    cfg = load_config(["experiment=tiny", "eval.n_tasks=2", "eval.batch_size=2", "eval.figures=false"])
    family = build_family(cfg)
    learner = build_learner(cfg, family)
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    summary = evaluate_meta(learner, meta, family, cfg, tmp_path)
    saved = json.loads((tmp_path / "metrics.json").read_text())
    assert saved["information"] == "target_path, learner_spikes, clock"
    assert "the inner rule was given: target_path, learner_spikes, clock" in format_table(summary)


def test_a_source_without_a_declaration_is_recorded_as_reading_everything():
    learner, meta, task, _ = tiny("lif")

    class Silent:  # a user's source that predates the contract
        def run(self, params, obs):
            return torch.zeros_like(obs.spikes), None

    silent = dataclasses.replace(learner, error_module=Silent())
    assert silent.information == frozenset(INFORMATION)
    assert describe(silent.information) == ", ".join(INFORMATION)
