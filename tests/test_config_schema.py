"""One cell configuration for both populations: the learning network and the error module read the same keys
with the same meanings, and every value that reaches a cell is in the resolved configuration."""

from __future__ import annotations

import dataclasses

import pytest

from eprop_l2l.cells.cuba_lif import CubaLIF
from eprop_l2l.cli import main
from eprop_l2l.config.compose import load_config
from eprop_l2l.config.schema import CellConfig, ErrorModuleConfig, ModelConfig
from eprop_l2l.runs.build import build


def test_both_populations_share_the_cell_keys():
    keys = {f.name for f in dataclasses.fields(CellConfig)}
    assert keys <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert keys <= {f.name for f in dataclasses.fields(ErrorModuleConfig)}


def test_an_alif_error_module_takes_its_constants_from_the_config():
    cfg = load_config(["experiment=tiny", "error_module.cell=alif", "error_module.tau_a=321",
                       "error_module.beta=0.5", "error_module.n_adaptive=4"])
    learner, *_ = build(cfg)
    spec = learner.error_module.cell.spec
    assert (spec.model, spec.tau_a_ms, spec.beta, spec.n_adaptive) == ("alif", 321.0, 0.5, 4)


@pytest.mark.parametrize("value, adaptive", [("null", 20), ("0", 0), ("7", 7)])
def test_n_adaptive_null_is_all_and_zero_is_none(value, adaptive):
    learner, *_ = build(load_config(["experiment=tiny", "model=alif", f"model.n_adaptive={value}"]))
    assert learner.network.cell.spec.n_adaptive == adaptive
    assert sum(b > 0 for b in learner.network.cell.spec.beta_per_neuron()) == adaptive


@pytest.mark.parametrize("overrides, message", [
    (["error_module.cell=alif", "error_module.tau_a=-1"], "error_module.tau_a: must be > 0"),
    (["error_module.beta=nan"], "error_module.beta: must be a finite number"),
    (["model.n_adaptive=3"], "model.n_adaptive: needs cell=alif"),
    (["model=alif", "model.n_adaptive=-1"], "model.n_adaptive: must be >= 0"),
    (["model=cuba_lif", "model.tau_syn=0"], "model.tau_syn: must be > 0"),
    (["error_module.tau_syn=-1"], "error_module.tau_syn: must be > 0"),  # unused values are checked too
    (["model=cuba_lif", "model.n_adaptive=2"], "model.n_adaptive: needs cell=alif"),
    (["inner.rule=snap2"], "inner.rule: unknown value 'snap2'"),  # not a one-shot rule (dense influence matrix)
])
def test_bad_cell_values_of_either_population_are_refused(overrides, message, tmp_path, capsys):
    assert main(["train", "experiment=tiny", f"run.dir={tmp_path / 'x'}", "wandb.mode=disabled", *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "x").exists()


def test_a_current_based_network_takes_its_synaptic_constant_from_the_config():
    learner, *_ = build(load_config(["experiment=tiny", "model=cuba_lif", "model.tau_syn=3.5"]))
    spec = learner.network.cell.spec
    assert (spec.model, spec.tau_syn_ms, spec.v_th) == ("cuba_lif", 3.5, 0.4)
    default, *_ = build(load_config(["experiment=tiny", "model.cell=cuba_lif", "inner.rule=ostl"]))
    assert default.network.cell.tau_syn == CubaLIF.tau_syn  # the cell's default, stated once
    assert default.rule.name == "ostl"  # OSTL's step is a one-shot inner rule


def test_choosing_alif_alone_makes_every_neuron_adapt():
    """``model.cell=alif`` on top of the default ``model=lif`` group: the lif group leaves n_adaptive unset."""
    learner, *_ = build(load_config(["experiment=tiny", "model.cell=alif"]))
    assert learner.network.cell.spec.n_adaptive == learner.network.cell.n_rec
