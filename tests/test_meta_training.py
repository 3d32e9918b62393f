"""Meta-training loop and one-shot evaluation on a tiny arm preset."""

import dataclasses
import json

import pytest
import torch

from eprop_l2l.cells import LIF, LeakyReadout, RecurrentNetwork
from eprop_l2l.config.schema import OptimConfig
from eprop_l2l.error_modules.learned import LearnedErrorModule
from eprop_l2l.meta.evaluate import evaluate_one_shot, write_evaluation
from eprop_l2l.meta.learner import MetaLearner
from eprop_l2l.meta.params import flat, tree_map
from eprop_l2l.meta.trainer import MetaTraining, NonFiniteError, meta_train
from eprop_l2l.task_families.arm import ArmSines
from eprop_l2l.task_families.arm_objective import arm_outer_loss


def training(**overrides) -> MetaTraining:
    """The schema's defaults (the only ones) with ``overrides``."""
    return MetaTraining(**{**dataclasses.asdict(OptimConfig()), **overrides})


def test_the_schema_reads_every_outer_loop_default_from_meta_training():
    # issue 21: the component states its defaults, the schema reads them (no second copy to drift)
    assert {f.name for f in dataclasses.fields(MetaTraining)} == {f.name for f in dataclasses.fields(OptimConfig)}
    assert dataclasses.asdict(OptimConfig()) == dataclasses.asdict(MetaTraining())
    assert MetaTraining().n_iterations == 10000 and MetaTraining().lr_schedule == "steps"  # the recipe's


def tiny_learner(n_steps=100):
    family = ArmSines(n_steps=n_steps, n_pop_per_dim=10, dt_ms=1.0)
    n, n_em = 20, 12
    network = RecurrentNetwork(LIF(family.n_in, n, v_th=0.4, n_ref=5, dt_ms=1.0),
                               LeakyReadout(n, 2, bias=False, init_scale=1.0, dt_ms=1.0))
    module = LearnedErrorModule(LIF(family.n_context + n + family.n_in, n_em, v_th=0.4, n_ref=5, dt_ms=1.0), n,
                                family.n_context, family.n_in, fast_loop=True, dt_ms=1.0)
    return MetaLearner(network, module, inner_lr=1e-3, learn_inner_lr=True, outer_loss=arm_outer_loss), family


def test_meta_training_is_reproducible_and_lowers_the_meta_loss():
    learner, family = tiny_learner()
    config = training(n_iterations=25, batch_size=4, lr=3e-3, validate_every=10, n_validation_tasks=8)
    first = meta_train(learner, family, config)
    second = meta_train(learner, family, config)
    for name, value in flat(first.meta).items():
        assert torch.equal(value, flat(second.meta)[name]), name
    losses = [r["loss"] for r in first.history]
    # the networks start far above their rate targets: the regularised meta-loss falls (measured: to 0.54×)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5
    assert "val/mse_cart_after" in first.history[0] and first.skipped == 0


def test_non_finite_steps_are_skipped_then_abort():
    learner, family = tiny_learner(n_steps=40)

    class Broken(type(learner)):
        def forward(self, meta, batch):
            out = super().forward(meta, batch)
            out["loss"] = out["loss"] * float("nan")
            return out

    broken = Broken(**{f: getattr(learner, f) for f in learner.__dataclass_fields__})
    config = training(n_iterations=10, batch_size=2, max_nonfinite=3, validate_every=100, n_validation_tasks=2)
    from eprop_l2l.meta.trainer import start

    state = start(broken, config)
    before = {k: v.detach().clone() for k, v in flat(state.meta).items()}
    with pytest.raises(NonFiniteError, match="3 non-finite steps in a row"):
        meta_train(broken, family, config, state)
    assert state.skipped == 3
    for name, value in flat(state.meta).items():
        assert torch.equal(value.detach(), before[name]), name  # nothing non-finite was ever applied


def test_evaluation_writes_metrics_and_figure(tmp_path):
    learner, family = tiny_learner()
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    summary, per_task, example = evaluate_one_shot(learner, meta, family, n_tasks=6, batch_size=4)
    path = write_evaluation(tmp_path, summary, per_task, example, family)
    saved = json.loads(path.read_text())
    for key in ("n_tasks", "mse_cart_before", "mse_cart_after", "mse_motor_before", "mse_motor_after",
                "hand_rmse_before", "hand_rmse_after"):
        assert key in saved
    assert saved["n_tasks"] == 6 and len(per_task["mse_cart_after"]) == 6
    assert (tmp_path / "one_shot.png").stat().st_size > 10_000
    # same held-out seed, same numbers
    again, _, _ = evaluate_one_shot(learner, meta, family, n_tasks=6, batch_size=4)
    assert again["mse_cart_after"] == saved["mse_cart_after"]


def test_presets_build_and_reject_unknown_names():
    from eprop_l2l.errors import ConfigError
    from eprop_l2l.runs.build import from_experiment

    learner, family, config = from_experiment("paper", "inner.fast_loop=false")
    assert learner.network.cell.n_rec == 400 and learner.error_module.cell.n_rec == 300
    assert config.batch_size == 100 and family.n_steps == 500 and family.n_context == 200
    assert learner.error_module.cell.n_in == 200 + 400 + 10  # target code, learner spikes, clock
    assert config.lr == 1e-3 and learner.inner_lr == 1e-4 and learner.network.readout.init_scale == 0.05
    with pytest.raises(ConfigError, match="^experiment: .*experiment/nope"):
        from_experiment("nope")


@pytest.mark.slow
def test_short_meta_training_makes_one_update_lower_the_hand_error_on_unseen_movements():
    """300 meta-iterations of the ``cpu`` preset (≈ 4 min on one core): on 64 held-out movements the single
    e-prop update driven by the learned error module lowers MSE_cart to < 0.85 × its pre-update value and the
    motor error to < 0.7 ×; at initialisation it does neither (measured 1.6× worse MSE_cart)."""
    import dataclasses

    from eprop_l2l.runs.build import from_experiment

    learner, family, config = from_experiment("cpu")
    config = dataclasses.replace(config, n_iterations=300, validate_every=10_000, n_validation_tasks=16)
    untrained = learner.init_meta_params(torch.Generator().manual_seed(config.seed))
    initial, _, _ = evaluate_one_shot(learner, untrained, family, n_tasks=64, seed=2024, batch_size=32)
    assert initial["mse_cart_after"] > initial["mse_cart_before"]  # the untrained update does not help
    state = meta_train(learner, family, config)
    meta = tree_map(lambda v: v.detach(), state.meta)
    trained, _, _ = evaluate_one_shot(learner, meta, family, n_tasks=64, seed=2024, batch_size=32)
    assert trained["mse_cart_after"] < 0.85 * trained["mse_cart_before"], trained
    assert trained["mse_motor_after"] < 0.7 * trained["mse_motor_before"], trained


def test_budget_schedule_follows_the_cpu_time_spent_and_stops_when_it_is_spent():
    learner, family = tiny_learner(n_steps=40)
    budget_minutes = 0.02  # 1.2 CPU seconds: a few dozen meta-iterations of this learner
    config = training(n_iterations=10**6, batch_size=2, lr=1e-3, lr_schedule="budget", lr_end=0.05,
                      budget_minutes=budget_minutes, validate_every=10**6, n_validation_tasks=2)
    state = meta_train(learner, family, config)
    spent = 0.0
    for record in state.history:  # each step's rate is lr · lr_end^(fraction spent before it), independently
        expected = 1e-3 * 0.05 ** min(1.0, spent / (60 * budget_minutes))
        assert record["lr"] == pytest.approx(expected, rel=1e-12)
        spent += record["cpu_seconds"]
    assert spent >= 60 * budget_minutes  # stopped because the budget was spent ...
    assert spent - state.history[-1]["cpu_seconds"] < 60 * budget_minutes  # ... and not one step later
    assert state.cpu_seconds == pytest.approx(spent)
    assert state.history[-1]["lr"] < 1e-3 * 0.05 ** 0.5  # annealed over the budget, not at a fixed iteration
    assert meta_train(learner, family, config, state).iteration == state.iteration  # nothing left to spend


def test_budget_clock_is_restored_on_resume(tmp_path):
    from eprop_l2l.runs.checkpoint import restore, save_checkpoint

    learner, family = tiny_learner(n_steps=40)
    config = training(n_iterations=3, batch_size=2, lr_schedule="budget", budget_minutes=10.0,
                      validate_every=10**6, n_validation_tasks=2)
    state = meta_train(learner, family, config)
    save_checkpoint(tmp_path, state, 1)
    from eprop_l2l.runs.checkpoint import latest_checkpoint

    resumed = restore(learner, config, latest_checkpoint(tmp_path))
    assert resumed.cpu_seconds == pytest.approx(sum(r["cpu_seconds"] for r in state.history), rel=1e-12)
    assert resumed.cpu_seconds > 0


@pytest.mark.parametrize(("overrides", "key"), [
    ({"lr_schedule": "cosine"}, "meta.lr_schedule"),
    ({"lr_schedule": "budget", "budget_minutes": 0.0}, "meta.lr_schedule"),
    ({"lr_end": 1.5}, "meta.lr_end"),
    ({"lr_end": 0.0}, "meta.lr_end"),
    ({"budget_minutes": -1.0}, "meta.budget_minutes"),
])
def test_budget_settings_are_checked(overrides, key):
    with pytest.raises(ValueError, match=f"^{key}:"):
        training(**overrides)
