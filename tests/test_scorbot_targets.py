"""The Scorbot's target velocities and the clip-free subset (task_families/scorbot.py, meta/evaluate.py):

* by default the targets are the recipe's: the exact ω* scores the pinned cm on the clipped path (a regression
  pin of the committed runs' task stream);
* with ``task.consistent_targets`` they are the velocities of the clipped path: the exact ω* reproduces the target
  path (0 cm), and on the trajectories the clip never acts on they equal the recipe's;
* the clip-free rule on constructed velocities (a walk that stays inside the limits, one that ends exactly one
  step short of them, ones that pass them), and the subset's summary and table against hand computations.
"""

import math

import pytest
import torch

from eprop_l2l.config.compose import load_config
from eprop_l2l.errors import ConfigError
from eprop_l2l.meta.evaluate import evaluate_one_shot, subset_summary
from eprop_l2l.runs.build import build, build_family
from eprop_l2l.runs.evaluation import format_table
from eprop_l2l.task_families import make_task_family

# the recipe's targets on 16 draws of seed 0 (float64): today's numbers, pinned so that the option's default
# keeps every committed run's task stream bit for bit
RECIPE_MEAN_CM = 5.611232508951213
RECIPE_CM_2_15 = (14.081208514876142, 26.269971343492383)  # tasks 2 and 15
CLIP_FREE = [0, 10, 11, 12, 13, 14]


def sample(consistent: bool, n: int = 16):
    family = make_task_family("scorbot_brownian", dt_ms=1.0, consistent_targets=consistent)
    return family, family.sample(n, torch.Generator().manual_seed(0), dtype=torch.float64)


def test_the_recipes_targets_are_unchanged_by_default():
    family, batch = sample(False)
    cm = family.errors(batch.targets, batch)["deviation_cm"]
    assert float(cm.mean()) == pytest.approx(RECIPE_MEAN_CM, rel=1e-12)
    assert (float(cm[2]), float(cm[15])) == pytest.approx(RECIPE_CM_2_15, rel=1e-12)
    assert torch.nonzero(cm == 0).flatten().tolist() == CLIP_FREE
    assert torch.nonzero(family.subsets(batch)["clip_free"]).flatten().tolist() == CLIP_FREE


def test_consistent_targets_follow_the_clipped_path_exactly():
    family, batch = sample(True)
    cm = family.errors(batch.targets, batch)["deviation_cm"]
    assert float(cm.max()) <= 1e-6
    # independently: the arm's angles from the targets are the clipped angles the path was computed from
    torch.testing.assert_close(0.01 * torch.cumsum(batch.targets, 1), batch.extra["angles"], rtol=0, atol=1e-12)
    limits = torch.tensor([math.radians(130), math.radians(70)], dtype=torch.float64)
    assert (batch.extra["angles"].abs() <= limits).all()
    recipe_family, recipe = sample(False)
    # the option changes the targets where the clip acts, and nothing else: inputs, code, path, the free subset
    torch.testing.assert_close(batch.targets[CLIP_FREE], recipe.targets[CLIP_FREE], rtol=0, atol=1e-12)
    assert not torch.allclose(batch.targets[2], recipe.targets[2])
    for key in ("hand", "angles", "clip_free"):
        assert torch.equal(batch.extra[key], recipe.extra[key])
    assert torch.equal(batch.context, recipe.context) and torch.equal(batch.inputs, recipe.inputs)


def test_the_clip_free_rule_on_constructed_velocities():
    family = make_task_family("scorbot_brownian", dt_ms=1.0)
    steps, dt = family.n_steps, family.kinematic_step_s
    base, shoulder = math.radians(130), math.radians(70)
    omega = torch.zeros(5, steps, 2, dtype=torch.float64)
    omega[1, :, 0] = 0.5 * base / (dt * steps)  # half-way to the base's limit
    omega[2, : steps - 1, 1] = -0.999 * shoulder / (dt * (steps - 1))  # just short of the shoulder's limit
    omega[3, :, 0] = 1.01 * base / (dt * steps)  # past the base's limit at the end
    omega[4, 10:20, 1] = 1.5 * shoulder / (dt * 10)  # past the shoulder's limit early, back inside later
    omega[4, 20:30, 1] = -1.5 * shoulder / (dt * 10)
    batch = family.trials(omega, torch.float64)
    assert family.subsets(batch)["clip_free"].tolist() == [True, True, True, False, False]
    assert torch.equal(batch.extra["clip_free"], torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0], dtype=torch.float64))


def test_a_subsets_summary_and_table():
    per_task = {"deviation_cm_before": [60.0, 70.0, 80.0, 90.0], "deviation_cm_after": [1.0, 2.0, 30.0, 10.0]}
    got = subset_summary("clip_free", per_task, [True, True, False, True])
    assert got["n_tasks_clip_free"] == 3
    assert got["deviation_cm_after_clip_free"] == pytest.approx(13 / 3, rel=1e-12)
    assert got["deviation_cm_after_clip_free_sd"] == pytest.approx(math.sqrt(((1 - 13 / 3) ** 2 + (2 - 13 / 3) ** 2
                                                                              + (10 - 13 / 3) ** 2) / 2), rel=1e-12)
    assert got["deviation_cm_after_clip_free_median"] == 2.0
    assert got["deviation_cm_before_clip_free_median"] == 70.0
    assert subset_summary("clip_free", per_task, [False] * 4) == {"n_tasks_clip_free": 0}
    summary = {"n_tasks": 4, "seed": 1, "rate_network_hz": 20.0, **{k: sum(v) / 4 for k, v in per_task.items()},
               **{f"{k}_sd": 0.0 for k in per_task}, **got}
    table = format_table(summary)
    assert "clip_free: 3 of the 4 tasks" in table
    assert "4.333 ± 4.93 (2)" in table.splitlines()[-1]


def test_an_evaluation_reports_the_clip_free_subset():
    cfg = load_config(["experiment=natural_cpu", "task.n_steps=150", "model.n_rec=20", "error_module.n_rec=12",
                       "error_module.n_adaptive=4"])
    learner, family, _, _ = build(cfg)
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    summary, per_task, _ = evaluate_one_shot(learner, meta, family, n_tasks=16, seed=0, batch_size=8, example=False)
    generator = torch.Generator().manual_seed(0)  # the evaluation's draws: two batches of 8
    free = [bool(v) for _ in range(2) for v in family.subsets(family.sample(8, generator))["clip_free"]]
    assert per_task["clip_free"] == free and 0 < sum(free) < 16
    assert summary["n_tasks_clip_free"] == sum(free)
    after = [v for v, keep in zip(per_task["deviation_cm_after"], free, strict=True) if keep]
    assert summary["deviation_cm_after_clip_free"] == pytest.approx(sum(after) / len(after), rel=1e-12)


def test_consistent_targets_is_a_scorbot_key():
    assert build_family(load_config(["task=scorbot_brownian", "task.consistent_targets=true"])).consistent_targets
    with pytest.raises(ConfigError, match=r"^task\.consistent_targets: arm_sines does not clip"):
        build_family(load_config(["task.consistent_targets=true"]))
