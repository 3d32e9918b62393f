"""Hardware export III: e-prop 1 as an exported rule — the learner's own output error through a feedback matrix.

The learning signal L^t = B·mask^t·(y^t − y*^t) of the learner's leaky readout, with B = s·(W^out)ᵀ (symmetric)
or B = b_fb (random, meta-learned in meta-training), is described in ``rule.json`` (format version 2,
``description.FeedbackSignal``), executed by the step-wise engine, and must equal ``eprop_online`` of the trained
model. The committed e-prop 1 runs of the science work export; the Cartesian-error runs (``inner.objective=hand``)
are refused in one line naming the key. Lava is tested in ``tests/test_lava_eprop1.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eprop_l2l.cells.network import RecurrentNetwork
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.cli import main
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.hardware.description import FORMAT_VERSION, FeedbackSignal
from eprop_l2l.hardware.engine import FloatArithmetic
from eprop_l2l.hardware.export import file_weights, verify
from eprop_l2l.hardware.fidelity import demonstrate, online_reference, relative_error
from eprop_l2l.hardware.rule import ExportError, describe, load_rule, save_rule
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.build import from_experiment
from eprop_l2l.runs.evaluation import evaluation_setup

ROOT = Path(__file__).resolve().parent.parent
EXPORT_V2 = ROOT / "tests" / "data" / "export_v2_eprop1"
RESULTS = ROOT / "docs" / "results"
# the committed e-prop 1 runs with the motor error (learned B): the ablation and the comparison's oracle row
MOTOR_RUNS = (RESULTS / "ablation_eprop1_cpu_60min", RESULTS / "comparison" / "oracle_eprop1" / "seed0")
HAND_RUN = RESULTS / "comparison" / "eprop1_hand" / "seed0"
QUIET = ("wandb.mode=disabled", "run.progress=false")
KINDS = ("symmetric", "random")

# float32: the step-wise engine and eprop_online (its native loop, for feedback sources) sum the T steps in
# different orders, so they agree to ~T·eps, not to the last bit (float64 is held to 1e-10 in this file)
FLOAT32_AGREEMENT = 1e-5


def feedback_learner(kind: str, scaling: str = "new"):
    """A fresh ``tiny`` e-prop 1 learner with the feedback ``kind``; ``scaling="old"`` gives its readout the input
    scale s = 1 − κ, which symmetric B carries (so a B without it fails the equality)."""
    learner, family, _ = from_experiment("tiny", "error_module.kind=feedback", f"error_module.feedback={kind}")
    if scaling == "old":
        r = learner.network.readout
        readout = LeakyReadout(r.n_in, r.n_out, r.tau_out, "old", r.bias, r.init_scale, dt_ms=r.dt_ms)
        learner = dataclasses.replace(learner, network=RecurrentNetwork(learner.network.cell, readout))
    return learner, family


@pytest.mark.parametrize("scaling", ["new", "old"])
@pytest.mark.parametrize("kind", KINDS)
def test_the_engine_equals_eprop_online_in_float64_for_each_feedback_kind(kind, scaling):
    learner, family = feedback_learner(kind, scaling)
    meta = tree_map(lambda v: v.double(), learner.init_meta_params(torch.Generator().manual_seed(3)))
    rule, weights = describe(learner, file_weights(meta))
    assert rule.is_feedback and rule.learning_signal.feedback == kind
    readout = learner.network.readout
    assert rule.learning_signal.scale == (readout.input_scale if kind == "symmetric" else 1.0)
    assert ("b_fb" in weights) == (kind == "random") and not any(k.startswith("em_") for k in weights)
    batch = family.sample(3, torch.Generator().manual_seed(4), dtype=torch.float64)
    result = demonstrate(rule, {k: file_weights(meta)[k] for k in weights}, batch, FloatArithmetic(rule))
    reference = online_reference(learner, meta, batch)
    for name in ("w_in", "w_rec"):
        assert relative_error(result.tags[name], reference[name]) <= 1e-10, name
        assert float(reference[name].abs().max()) > 1e-3  # a real update, not zeros


def test_the_engine_reads_b_from_the_description():
    """A feedback matrix other than the exported one changes the update (the test can fail)."""
    learner, family = feedback_learner("random")
    meta = learner.init_meta_params(torch.Generator().manual_seed(3))
    rule, weights = describe(learner, file_weights(meta))
    batch = family.sample(2, torch.Generator().manual_seed(4))
    good = demonstrate(rule, weights, batch, FloatArithmetic(rule)).tags["w_in"]
    other = {**weights, "b_fb": np.flip(weights["b_fb"], 0).copy()}
    bad = demonstrate(rule, other, batch, FloatArithmetic(rule)).tags["w_in"]
    assert relative_error(bad, good) > 0.1
    with pytest.raises(ValueError, match="target and mask"):
        from eprop_l2l.hardware.engine import run_rule

        run_rule(rule, weights, batch.inputs, batch.context, FloatArithmetic(rule))


@pytest.mark.parametrize("run", MOTOR_RUNS, ids=lambda p: p.parent.name if p.name == "seed0" else p.name)
def test_the_committed_motor_error_eprop1_runs_export_and_equal_eprop_online(run, tmp_path):
    cfg, learner, family, meta, *_ = evaluation_setup(str(run))
    assert cfg.error_module.kind == "feedback" and cfg.inner.objective == "motor"
    meta = tree_map(lambda v: v.detach(), meta)
    rule, weights = describe(learner, file_weights(meta))
    save_rule(tmp_path, rule, weights)
    loaded, loaded_weights = load_rule(tmp_path)
    assert loaded == rule and loaded.format_version == FORMAT_VERSION == 3
    assert loaded.learning_signal.feedback == cfg.error_module.feedback == "random"  # B meta-learned from random
    np.testing.assert_array_equal(loaded_weights["b_fb"], meta["error_module"]["b_fb"].numpy())
    batch = family.sample(2, torch.Generator().manual_seed(cfg.eval.seed))
    result = demonstrate(loaded, loaded_weights, batch, FloatArithmetic(loaded))
    reference = online_reference(learner, meta, batch)
    for name in ("w_in", "w_rec"):
        assert relative_error(result.tags[name], reference[name]) <= FLOAT32_AGREEMENT, name
        assert float(reference[name].abs().max()) > 1.0


def test_the_cartesian_error_run_is_refused_in_one_line_naming_the_key(tmp_path, capsys):
    """inner.objective=hand: the error p − p* is the arm's forward kinematics of the integrated readout, which
    the learning engine's populations do not compute."""
    out = tmp_path / "out"
    for target in ("rule", "lava"):
        assert main(["export", str(HAND_RUN), "--target", target, "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("eprop-l2l: inner.objective: 'hand': the Cartesian error"), err
        assert "inner.objective=motor" in err and not out.exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_feedback_learned_between_trials_is_refused():
    learner, _ = feedback_learner("random")
    adaptive = dataclasses.replace(learner, error_module=Feedback("adaptive", learner.network.cell.n_rec, 2))
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    with pytest.raises(ExportError, match=r"^error_module\.feedback: 'adaptive': B learned between trials"):
        describe(adaptive, file_weights(meta))


@pytest.fixture(scope="module")
def feedback_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("eprop1_runs")
    runs = {}
    for kind in KINDS:
        runs[kind] = root / kind
        assert main(["train", "experiment=tiny", "optim.n_iterations=1", f"run.dir={runs[kind]}", *QUIET,
                     "error_module.kind=feedback", f"error_module.feedback={kind}"]) == 0
    return runs


@pytest.mark.parametrize("kind, target", [("symmetric", "rule"), ("random", "lava")])
def test_eprop_l2l_export_writes_each_feedback_kind_with_its_fidelity(feedback_runs, kind, target, tmp_path):
    out = tmp_path / "export"
    # eight calibration demonstrations: with two, 1 % of the wide tags of the untrained symmetric model saturate
    assert main(["export", str(feedback_runs[kind]), "--target", target, "--out", str(out), "--tasks", "2",
                 "--calibration-tasks", "8"]) == 0
    manifest = verify(out)
    assert manifest["format_version"] == FORMAT_VERSION and manifest["target"] == target
    rule, weights = load_rule(out)
    assert rule.learning_signal == FeedbackSignal(
        source="output_error", feedback=kind, error="motor", target_width=2,
        projection="w_out" if kind == "symmetric" else "b_fb", transposed=kind == "symmetric", scale=1.0,
        definition=rule.learning_signal.definition)
    assert sorted(weights) == sorted(["w_in", "w_rec", "w_out"] + (["b_fb"] if kind == "random" else []))
    report = json.loads((out / "fidelity.json").read_text())
    assert max(report["loaded_rule_vs_eprop_online"].values()) <= FLOAT32_AGREEMENT
    assert report["wide"]["mse_cart_ratio_to_float"] == pytest.approx(1.0, abs=1e-3)  # the integer chain is exact
    assert min(report["wide"][n]["dw_correlation"] for n in ("w_in", "w_rec")) >= 0.999  # 0.1 % may saturate
    with np.load(out / "demonstrations.npz") as d:
        assert d["mask"].shape == d["x"].shape[:2] and d["omega_target"].shape[-1] == 2
    if target == "lava":
        assert rule.number_format.is_fixed and report["loihi"]["w_in"]["dw_correlation"] > 0.5


# --- the description: version 2 reads and re-writes, version 1 stays readable, malformed records are refused --------
@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((EXPORT_V2 / "rule.json").read_text())


def test_the_committed_version_2_eprop1_export_loads_and_rewrites_byte_for_byte(record, tmp_path):
    rule, weights = load_rule(EXPORT_V2)
    assert rule.format_version == record["format_version"] == 2 and rule.is_feedback
    assert rule.learning_signal.projection == "b_fb" and weights["b_fb"].shape == (20, 2)
    save_rule(tmp_path, rule, weights)
    assert (tmp_path / "rule.json").read_text() == (EXPORT_V2 / "rule.json").read_text()


def _edited(record: dict, **signal) -> dict:
    out = copy.deepcopy(record)
    out["learning_signal"].update(signal)
    return out


@pytest.mark.parametrize("edit, message", [
    ({"source": "spikes"}, "learning_signal.source: 'spikes' \\(choose from error_module, output_error\\)"),
    ({"feedback": "adaptive"}, "learning_signal.feedback: 'adaptive' \\(choose from symmetric, random\\)"),
    ({"error": "hand"}, "learning_signal.error: 'hand' \\(choose from motor\\)"),
    ({"projection": "w_out"}, "learning_signal.projection: 'w_out' \\(transposed false\\); random feedback is "
                              "'b_fb'"),
    ({"target_width": 3}, "learning_signal.target_width: 3, the readout has n_out 2"),
    ({"scale": 2.0}, "learning_signal.scale: 2.0; random feedback B is b_fb itself"),
    ({"scale": -1.0}, "learning_signal.scale"),
    ({"transposed": "no"}, "learning_signal.transposed: must be bool, got str"),
    ({"neurons": {}}, "learning_signal.neurons: unknown key"),
])
def test_a_malformed_feedback_signal_is_refused_in_one_line(record, tmp_path, edit, message):
    shutil.copy(EXPORT_V2 / "weights.npz", tmp_path / "weights.npz")
    (tmp_path / "rule.json").write_text(json.dumps(_edited(record, **edit)))
    with pytest.raises(ExportError, match=message) as err:
        load_rule(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'rule.json'}: ") and "\n" not in str(err.value)


def test_a_version_1_file_cannot_hold_a_feedback_signal_and_b_fb_must_be_there(record, tmp_path):
    shutil.copy(EXPORT_V2 / "weights.npz", tmp_path / "weights.npz")
    (tmp_path / "rule.json").write_text(json.dumps({**record, "format_version": 1}))
    with pytest.raises(ExportError, match="learning_signal.source: 'output_error' needs format version 2"):
        load_rule(tmp_path)
    (tmp_path / "rule.json").write_text(json.dumps(record))
    with np.load(EXPORT_V2 / "weights.npz") as w:
        np.savez(tmp_path / "weights.npz", **{k: w[k] for k in w.files if k != "b_fb"})
    with pytest.raises(ExportError, match=re.escape("weights.npz: missing arrays ['b_fb']")):
        load_rule(tmp_path)
