"""Natural e-prop's ED-Scorbot models export, and run in Lava, scored as the family scores them.

A Scorbot run (``experiment=natural_cpu`` shrunk: 16 LIF trainee, 12-neuron learning-signal generator of which 4
adapt, 120-step trials, two iterations) is exported with two held-out movements. The torch side's numbers are the
family's own (``ScorbotBrownian.errors``: the deviation in cm), the plant record (``plant.json``) holds the
family's constants, a malformed one is refused in one line naming the file and the key, and a family without a
plant is refused naming ``task.family``. Where ``.venv-lava`` exists (``make lava-env``: CPython 3.10), the Lava
program runs the export with the replayed signal and with the error module in Lava: identical spikes, the same
update and the same deviation in cm as PyTorch (docs/natural_eprop.md has the numbers of the committed run).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from eprop_l2l.cli import main
from eprop_l2l.hardware.description import READ_VERSIONS, ExportError
from eprop_l2l.hardware.lava import artefacts, launcher, plants
from eprop_l2l.hardware.plant import plant_record
from eprop_l2l.runs.evaluation import evaluation_setup
from eprop_l2l.task_families import make_task_family

ROOT = Path(__file__).resolve().parent.parent
LAVA_PY = ROOT / ".venv-lava" / "bin" / "python"
N_TASKS, N_STEPS = 2, 120
RUN = ("experiment=natural_cpu", "optim.budget_minutes=0", "optim.lr_schedule=steps", "optim.n_iterations=2",
       "optim.batch_size=4", "model.n_rec=16", "error_module.n_rec=12", "error_module.n_adaptive=4",
       f"task.n_steps={N_STEPS}", "eval.n_tasks=2", "eval.batch_size=2", "eval.figures=false", "wandb.mode=disabled",
       "run.progress=false")
needs_lava = pytest.mark.skipif(not LAVA_PY.exists(), reason="no .venv-lava (`make lava-env`, CPython 3.10)")


@pytest.fixture(scope="module")
def scorbot(tmp_path_factory):
    root = tmp_path_factory.mktemp("scorbot_export")
    assert main(["train", *RUN, f"run.dir={root / 'run'}"]) == 0
    assert main(["export", str(root / "run"), "--target", "lava", "--out", str(root / "export"), "--tasks",
                 str(N_TASKS), "--calibration-tasks", "1"]) == 0
    cfg, _, family, *_ = evaluation_setup(str(root / "run"))
    return root / "export", cfg, family


def test_the_export_scores_the_scorbot_in_cm_with_the_familys_own_errors(scorbot):
    export, cfg, family = scorbot
    manifest = json.loads((export / "manifest.json").read_text())
    assert "plant.json" in manifest["files"]
    assert json.loads((export / "plant.json").read_text()) == plant_record(family).to_dict()
    report = json.loads((export / "fidelity.json").read_text())
    assert max(report["loaded_rule_vs_eprop_online"].values()) <= 1e-6  # the rule is the trained model's
    assert report["wide"]["deviation_cm_ratio_to_float"] == pytest.approx(1.0, abs=1e-3)
    assert "mse_cart_after" not in report["float"]
    with np.load(export / "demonstrations.npz") as d:
        demos = {k: d[k] for k in d.files}
    assert demos["hand_target"].shape == (N_TASKS, N_STEPS, 3)
    assert demos["z_demo"].sum() > 0 and np.abs(demos["dw_rec"]).max() > 0  # spikes and an update to compare
    # the exported PyTorch number is the family's metric of the exported test trial, on the same held-out tasks
    batch = family.sample(N_TASKS, torch.Generator().manual_seed(cfg.eval.seed))
    np.testing.assert_array_equal(demos["hand_target"], batch.extra["hand"].numpy())
    y = torch.from_numpy(demos["y_test"])
    expected = family.errors(y, batch)["deviation_cm"].numpy()
    np.testing.assert_allclose(demos["deviation_cm_after"], expected, rtol=1e-6)
    assert report["float"]["deviation_cm_after"] == pytest.approx(float(expected.mean()), rel=1e-6)
    # and what the numpy plant makes of the same trial (float64 on float32 data)
    plant = artefacts.load(export).plant
    numpy_cm = plants.score(plant, plants.path(plant, demos["y_test"]), demos["hand_target"])
    np.testing.assert_allclose(numpy_cm, expected, rtol=1e-5)
    assert "| one-shot deviation (cm) before → after (float) |" in (export / "README.md").read_text()


def test_a_family_without_a_plant_is_refused_naming_task_family():
    family = make_task_family("evidence", dt_ms=1.0)
    with pytest.raises(ExportError, match=r"^task\.family: evidence: the export scores .* on a plant"):
        plant_record(family)


def resign(directory: Path) -> None:
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
                         for name in manifest["files"] if (directory / name).is_file()}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.update(kind="robot"), r"kind: 'robot' \(choose from two_joint_arm, scorbot\)"),
    (lambda r: r["geometry"].pop("a2"), r"geometry\.a2: missing"),
    (lambda r: r["geometry"].update(a2=-0.3), r"geometry\.a2: must be > 0, got -0\.3"),
    (lambda r: r["geometry"].update(l1=0.5), r"geometry\.l1: unknown key \(a scorbot has d1, a1"),
    (lambda r: r.update(start=[0.0, 0.0, 0.0]), r"start: must have 2 entries"),
    (lambda r: r.update(step_s="fast"), r"step_s: must be a number, got 'fast'"),
    (lambda r: r.update(metric="rmse"), r"metric: 'rmse' \(choose from mse_cart, deviation_cm\)"),
    (lambda r: r.update(colour="red"), r"colour: unknown key"),
    (lambda r: r.update(format_version=max(READ_VERSIONS) + 1),  # the first version this reader does not read
     rf"format version {max(READ_VERSIONS) + 1}; this eprop-l2l reads versions {', '.join(map(str, READ_VERSIONS))}"),
])
def test_a_malformed_plant_record_is_refused_in_one_line_naming_the_file_and_key(scorbot, tmp_path, edit, message):
    bad = tmp_path / "bad"
    shutil.copytree(scorbot[0], bad)
    record = json.loads((bad / "plant.json").read_text())
    edit(record)
    (bad / "plant.json").write_text(json.dumps(record))
    resign(bad)
    with pytest.raises(artefacts.ArtefactError, match=rf"^plant\.json: {message}") as err:
        artefacts.load(bad)
    assert "\n" not in str(err.value)


def test_an_export_without_a_plant_record_is_scored_on_the_two_joint_arm(scorbot, tmp_path):
    """Exports written before plant.json were all of the arm: the Lava reader scores them so (tests/
    test_lava_mirrors.py), and a Scorbot's demonstrations, scored in cm, then fail in one line instead of being
    scored as an arm's."""
    bad = tmp_path / "old"
    shutil.copytree(scorbot[0], bad)
    (bad / "plant.json").unlink()
    resign(bad)
    with pytest.raises(artefacts.ArtefactError, match=r"demonstrations\.npz: array 'deviation_cm_after': unknown") \
            as err:
        artefacts.load(bad)
    assert "\n" not in str(err.value)


# --- in Lava -------------------------------------------------------------------------------------------------
def _lava(export: Path, out: Path, tasks: int, *args: str) -> dict:
    result = launcher.run([str(export), "--tasks", str(tasks), "--no-figure", "--out", str(out), *args],
                          timeout=900, python=LAVA_PY, capture=True)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads((out / "lava_report.json").read_text())


@needs_lava
@pytest.mark.parametrize("signal", ["replay", "module"])
def test_in_lava_the_scorbot_update_and_its_deviation_in_cm_are_pytorchs(scorbot, tmp_path, signal):
    """Float models: the learner's spikes are identical in the demonstration and the test trial, Lava's update is
    e-prop's (ΔW correlation ≥ 0.99, float32 export vs float64 Lava), and the deviation in cm after the update is
    PyTorch's to float precision; with the ALIF learning-signal generator in Lava its signal is the exported one."""
    report = _lava(scorbot[0], tmp_path / signal, N_TASKS if signal == "replay" else 1, "--signal", signal)
    assert report["plant"] == "scorbot" and report["metric"] == "deviation_cm"
    for task in report["tasks"]:
        assert task["spikes_demo"]["identical"] and task["spikes_test"]["identical"], task
        for name in ("w_in", "w_rec"):
            f = task["vs_pytorch_float"][name]
            assert f["correlation"] >= 0.99 and f["relative_error"] < 1e-4, (task["task"], name, f)
        # float32 paths of about a metre are exact to ~1e-7 m: equal to 2 µm
        assert task["deviation_cm_lava"] == pytest.approx(task["deviation_cm_pytorch"], rel=0, abs=2e-4), task
        if signal == "module":
            assert task["signal_relative_error"] < 1e-5, task
    print(f"\n{(tmp_path / signal / 'lava_report.txt').read_text()}")
