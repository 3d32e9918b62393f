"""Hardware export IV: an ALIF learner's rule, with its per-synapse adaptation eligibility ε_a.

e-prop's eligibility of an ALIF synapse (``cells/alif.py``) is e^t = ψ^t (x̄^t − β_j ε_a^t) with
ε_a^{t+1} = ψ^t x̄^t + (ρ − β_j ψ^t) ε_a^t: a second per-synapse state beside the tag. Loihi 2's learning engine has
one (the synaptic variable d, updated by its own sum of products in the same epoch as the tag), so the export
states ε_a (``description.AdaptationEligibility``, format version 3) and runs the exact rule; ``docs/hardware.md``
gives the derivation. Lava is tested in ``tests/test_lava_alif.py``.
"""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from eprop_l2l.cli import main
from eprop_l2l.hardware.description import FORMAT_VERSION, AdaptationEligibility, RuleDescription
from eprop_l2l.hardware.engine import FixedArithmetic, FloatArithmetic
from eprop_l2l.hardware.export import file_weights, verify
from eprop_l2l.hardware.fidelity import calibrate_rule, demonstrate, online_reference, relative_error
from eprop_l2l.hardware.rule import ExportError, describe, load_rule, save_rule
from eprop_l2l.inner_loop.fixed_point import WIDE
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.build import from_experiment

QUIET = ("wandb.mode=disabled", "run.progress=false")


def alif_learner(*overrides):
    learner, family, _ = from_experiment("tiny", "model.cell=alif", *overrides)
    return learner, family


@pytest.mark.parametrize("overrides", [(), ("model.n_adaptive=7", "model.beta=0.5")], ids=["all adapt", "mixed"])
def test_the_engine_equals_eprop_online_for_an_alif_learner_in_float64(overrides):
    learner, family = alif_learner(*overrides)
    meta = tree_map(lambda v: v.double(), learner.init_meta_params(torch.Generator().manual_seed(3)))
    rule, weights = describe(learner, file_weights(meta))
    assert rule.adaptation == AdaptationEligibility() and rule.learner.neurons["model"] == "alif"
    batch = family.sample(3, torch.Generator().manual_seed(4), dtype=torch.float64)
    exact = demonstrate(rule, weights, batch, FloatArithmetic(rule))
    reference = online_reference(learner, meta, batch)
    # the rule that drops ε_a (a LIF learner's rule on the same ALIF dynamics) is measurably another update
    dropped = demonstrate(dataclasses.replace(rule, adaptation=None), weights, batch, FloatArithmetic(rule))
    for name in ("w_in", "w_rec"):
        assert relative_error(exact.tags[name], reference[name]) <= 1e-10, name
        assert float(reference[name].abs().max()) > 1.0
        assert relative_error(dropped.tags[name], reference[name]) > 0.02, name
    assert max(exact.held_max.values()) > 0.1  # β·ε_a is not negligible against x̄ ≤ 1/(1 − α) ≈ 20


def test_the_fixed_point_emulation_of_eps_a_at_wide_formats_equals_the_float_update():
    learner, family = alif_learner()
    meta = tree_map(lambda v: v.double(), learner.init_meta_params(torch.Generator().manual_seed(3)))
    rule, weights = describe(learner, file_weights(meta))
    batch = family.sample(2, torch.Generator().manual_seed(4), dtype=torch.float64)
    scales = calibrate_rule(rule, weights, family.sample(4, torch.Generator().manual_seed(5), dtype=torch.float64),
                            WIDE)
    assert set(scales.adaptation_exp) == {"w_in", "w_rec"}
    floating = demonstrate(rule, weights, batch, FloatArithmetic(rule))
    fixed = demonstrate(rule, weights, batch, FixedArithmetic(rule, WIDE, scales, torch.Generator().manual_seed(0)))
    assert torch.equal(fixed.spikes, floating.spikes)
    for name in ("w_in", "w_rec"):
        assert relative_error(fixed.tags[name], floating.tags[name]) <= 1e-4, name
    # the register d is the tag's width: a 9-bit d (Loihi) holds the calibrated β·ε_a without saturating
    top = WIDE.tag_range[1]
    assert max(fixed.held_max.values()) <= top and max(fixed.held_max.values()) > top / 4


def test_the_description_of_an_alif_rule_is_format_version_3_and_round_trips(tmp_path):
    learner, _ = alif_learner()
    meta = learner.init_meta_params(torch.Generator().manual_seed(3))
    rule, weights = describe(learner, file_weights(meta))
    save_rule(tmp_path, rule, weights)
    record = json.loads((tmp_path / "rule.json").read_text())
    assert record["format_version"] == FORMAT_VERSION == 3 and record["adaptation"] == AdaptationEligibility().to_dict()
    loaded, _ = load_rule(tmp_path)
    assert loaded == rule
    lif, _ = from_experiment("tiny")[:2]
    lif_rule, _ = describe(lif, file_weights(lif.init_meta_params(torch.Generator().manual_seed(3))))
    assert lif_rule.adaptation is None and "adaptation" not in lif_rule.to_dict()  # LIF keeps the old keys
    cases = [({**record, "format_version": 2}, "rule.json: adaptation: needs format version 3, the file says 2"),
             ({k: v for k, v in record.items() if k != "adaptation"}, "rule.json: adaptation: missing: the learner"),
             ({**record, "adaptation": {"definition": "x", "decay": 1}}, "rule.json: adaptation.decay: unknown key")]
    for bad, message in cases:
        with pytest.raises(ExportError) as err:
            RuleDescription.from_dict(bad)
        assert str(err.value).startswith(message) and "\n" not in str(err.value), str(err.value)


@pytest.fixture(scope="module")
def alif_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("alif") / "run"
    assert main(["train", "experiment=tiny", "model.cell=alif", "optim.n_iterations=1", f"run.dir={run}",
                 *QUIET]) == 0
    return run


@pytest.mark.parametrize("target", ["rule", "lava"])
def test_eprop_l2l_export_writes_an_alif_learners_rule_with_its_fidelity(alif_run, target, tmp_path):
    out = tmp_path / "export"
    assert main(["export", str(alif_run), "--target", target, "--out", str(out), "--tasks", "2"]) == 0
    assert verify(out)["format_version"] == 3
    rule, _ = load_rule(out)
    assert rule.adaptation is not None and rule.number_format.is_fixed == (target == "lava")
    report = json.loads((out / "fidelity.json").read_text())
    assert max(report["loaded_rule_vs_eprop_online"].values()) <= 1e-5
    assert report["wide"]["mse_cart_ratio_to_float"] == pytest.approx(1.0, abs=1e-3)
    assert min(report["wide"][n]["dw_correlation"] for n in ("w_in", "w_rec")) >= 0.999
    if target == "lava":
        assert set(rule.number_format.engine["scales"]["adaptation_exp"]) == {"w_in", "w_rec"}
        assert min(report["loihi"][n]["dw_correlation"] for n in ("w_in", "w_rec")) > 0.5


def test_the_nir_target_still_refuses_alif_adaptation_in_one_line(alif_run, tmp_path, capsys):
    """NIR's neuron primitives have no adaptive threshold: the one refusal of an ALIF learner that remains on the
    export side (Lava's fixed-point models are refused by the Lava program: tests/test_lava_alif.py)."""
    out = tmp_path / "nir"
    assert main(["export", str(alif_run), "--target", "nir", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eprop-l2l: network.cell: ALIF threshold adaptation"), err
    assert not out.exists()


def test_hardware_aware_meta_training_of_an_alif_learner_is_refused_in_one_line():
    """The quantised update of meta-training (inner_loop/quantized_update.py) forms the LIF tag ψL·x̄: with an
    adapting learner it would drop ε_a without saying so."""
    from eprop_l2l.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        alif_learner("inner.precision=loihi")
    assert str(err.value).startswith("inner.precision: 'loihi': the quantised update holds no per-synapse")
    alif_learner("inner.precision=loihi", "model.n_adaptive=0")  # no adapting neuron: the LIF tag is exact
