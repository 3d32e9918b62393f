"""The meta-parameter tree (``meta.params``) against what files hold: checkpoints store the flat names (every
checkpoint written before the tree, and every one since), Adam's state follows each parameter by name, and a
run written by the earlier code resumes."""

from pathlib import Path

import pytest
import torch

from eprop_l2l.meta import params as tree
from eprop_l2l.meta.trainer import meta_train
from eprop_l2l.runs.build import build_training
from eprop_l2l.runs.checkpoint import content_digest, latest_checkpoint, restore, save_checkpoint
from eprop_l2l.runs.evaluation import evaluation_setup

from .test_meta_training import tiny_learner, training

ROOT = Path(__file__).resolve().parents[1]


def test_flat_names_round_trip_and_keep_the_file_names():
    learner, _ = tiny_learner(n_steps=10)
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    assert list(meta) == ["network", "error_module", "log_inner_lr"]
    assert list(meta["error_module"]) == ["cell", "proj"]
    names = tree.flat(meta)
    assert list(names) == ["w_in", "w_rec", "w_out", "em_w_in", "em_w_rec", "em_proj", "log_inner_lr"]
    assert names["em_proj"] is meta["error_module"]["proj"] and names["em_w_in"] is meta["error_module"]["cell"]["w_in"]
    back = tree.nested(names)
    assert tree.flat(back).keys() == names.keys()
    assert all(a is b for a, b in zip(tree.leaves(back), tree.leaves(meta), strict=True))
    feedback = tree.nested({"w_in": names["w_in"], "b_fb": torch.zeros(2)})  # e-prop 1's matrix: unprefixed
    assert list(feedback["error_module"]) == ["b_fb"] and list(tree.flat(feedback)) == ["w_in", "b_fb"]


@pytest.mark.parametrize("run", ["docs/results/ablation_maml_cpu_60min", "docs/results/ablation_eprop1_cpu_60min"])
def test_a_checkpoint_written_by_the_earlier_code_restores_adam_by_name(run):
    """Committed runs were written as one flat mapping; each parameter gets back its own Adam moments (the
    MAML run has none for its unused error module: positions 3-5 are missing)."""
    cfg, learner, *_ = evaluation_setup(str(ROOT / run))
    path = latest_checkpoint(ROOT / run)
    stored = torch.load(path, weights_only=True)
    state = restore(learner, build_training(cfg), path)
    by_name = tree.flat(state.meta)
    assert list(by_name) == list(stored["meta"])
    assert state.optimizer.param_groups[0]["params"] == tree.leaves(state.meta)
    for position, name in enumerate(stored["meta"]):
        assert torch.equal(by_name[name].detach(), stored["meta"][name]), name
        moments = state.optimizer.state.get(by_name[name], {})
        if position in stored["optimizer"]["state"]:
            assert torch.equal(moments["exp_avg"], stored["optimizer"]["state"][position]["exp_avg"]), name
        else:
            assert not moments, name


def test_resume_from_a_flat_checkpoint_in_another_order_is_bit_identical(tmp_path):
    """A checkpoint whose flat mapping lists the parameters in another order than the tree's (positions of
    Adam's state follow that order) resumes to exactly the uninterrupted run."""
    learner, family = tiny_learner(n_steps=40)
    short = training(n_iterations=2, batch_size=2, lr=3e-3, validate_every=10**6, n_validation_tasks=2)
    full = training(n_iterations=4, batch_size=2, lr=3e-3, validate_every=10**6, n_validation_tasks=2)
    reference = tree.flat(meta_train(learner, family, full).meta)
    path = save_checkpoint(tmp_path / "run", meta_train(learner, family, short), keep=1)
    data = torch.load(path, weights_only=True)
    order = list(data["meta"])[::-1]  # log_inner_lr, em_proj, ..., w_in
    old_position = {name: i for i, name in enumerate(data["meta"])}
    data["meta"] = {name: data["meta"][name] for name in order}
    data["optimizer"]["state"] = {order.index(name): data["optimizer"]["state"][i]
                                  for name, i in old_position.items()}
    data["digest"] = content_digest(data)
    reordered = tmp_path / "reordered.pt"
    torch.save(data, reordered)
    state = restore(learner, full, reordered)
    assert list(tree.flat(state.meta)) == list(reference)  # the tree's order again
    resumed = tree.flat(meta_train(learner, family, full, state).meta)
    for name, value in reference.items():
        assert torch.equal(resumed[name], value), name
