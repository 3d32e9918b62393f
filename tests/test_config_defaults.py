"""The schema states no default of its own where a key maps to a component's field: it reads the component's
(``config.schema.component_default``). The values that are the e-prop 2 recipe's rather than a component's
are few, named here, and each differs from the component on purpose (docs/architecture.md, "Where a default
lives")."""

from __future__ import annotations

import dataclasses

import pytest

from eprop_l2l.cells.alif import ALIF
from eprop_l2l.cells.cuba_lif import CubaLIF
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.config.schema import ErrorModuleConfig, InnerConfig, ModelConfig, TaskConfig, component_default
from eprop_l2l.error_modules.learned import LearnedErrorModule
from eprop_l2l.inner_loop.device import PCMDevice
from eprop_l2l.meta.learner import MetaLearner
from eprop_l2l.task_families.arm import ArmSines

# the e-prop 2 recipe's values that differ from the cells' and the readout's Python defaults
RECIPE = {"v_th": (0.4, 0.6), "readout_init": (0.05, 1.0)}


def _defaults(cls) -> dict:
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def test_a_default_is_read_from_the_component_and_a_missing_one_is_an_error():
    assert component_default(ArmSines, "n_steps") == 500
    with pytest.raises(TypeError, match="ArmSines has no default for 'dt_ms'"):
        component_default(ArmSines, "dt_ms")  # the run's step is required, never defaulted
    with pytest.raises(TypeError, match="no default for 'nope'"):
        component_default(PCMDevice, "nope")


def test_the_populations_keys_are_the_cells_defaults_but_the_recipes():
    cell = {**_defaults(ALIF), **_defaults(CubaLIF), **_defaults(LeakyReadout),
            "readout_init": _defaults(LeakyReadout)["init_scale"]}
    for config in (ModelConfig(), ErrorModuleConfig()):
        shared = {k: v for k, v in dataclasses.asdict(config).items() if k in cell}
        assert {k: (v, cell[k]) for k, v in shared.items() if v != cell[k]} == \
            {k: pair for k, pair in RECIPE.items() if k in shared}
        assert {"tau_m", "n_ref", "tau_a", "beta", "n_adaptive", "tau_syn"} <= set(shared)
    module = _defaults(LearnedErrorModule)
    em = dataclasses.asdict(ErrorModuleConfig())
    assert {k: em[k] for k in em if k in module} == {k: module[k] for k in em if k in module}


def test_the_inner_loop_and_the_task_keys_are_the_components_defaults():
    inner, learner = InnerConfig(), _defaults(MetaLearner)
    assert (inner.rule, inner.lr, inner.n_updates, tuple(inner.plastic), inner.fast_loop, inner.precision) == \
        (learner["inner_rule"], learner["inner_lr"], learner["n_inner_updates"], learner["plastic"],
         learner["fast_loop"], learner["precision"])
    assert inner.filter_traces is False and learner["kappa"] == 0.0
    task = TaskConfig()
    assert (task.n_steps, task.n_pop_per_dim) == (_defaults(ArmSines)["n_steps"], _defaults(ArmSines)["n_pop_per_dim"])
