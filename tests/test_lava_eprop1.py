"""Hardware export IV: e-prop 1 on Loihi 2's learning engine, simulated by Lava (lava-nc 0.10.0).

With ``--signal module`` the learner's readout (leaky, as in the model) and the output error mask·(y − y*) run as
Lava processes, the target and the mask are inputs, and the feedback matrix B is a Dense projection onto the
learning neurons' third-factor input; ``replay`` drives the third factor with the exported L^t. The models are
``tiny`` e-prop 1 runs (20 LIF neurons, 100 steps) of both feedback kinds, one meta-iteration each. Skipped, as
``tests/test_lava.py`` is, where no CPython 3.10 exists.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from eprop_l2l.cli import main
from tests.test_lava import run_lava  # skips this module too where Lava cannot run

QUIET = ("wandb.mode=disabled", "run.progress=false")
N_TASKS = 2
KINDS = ("symmetric", "random")


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    root = tmp_path_factory.mktemp("lava_eprop1")
    out = {}
    for kind in KINDS:
        run_dir = root / f"run_{kind}"
        assert main(["train", "experiment=tiny", "optim.n_iterations=1", f"run.dir={run_dir}", *QUIET,
                     "error_module.kind=feedback", f"error_module.feedback={kind}"]) == 0
        out[kind] = root / f"export_{kind}"
        assert main(["export", str(run_dir), "--target", "lava", "--out", str(out[kind]), "--tasks", str(N_TASKS),
                     "--calibration-tasks", "8"]) == 0
    return out


def _run(export: Path, out: Path, *args: str) -> tuple[dict, dict]:
    result = run_lava([str(export), "--tasks", str(N_TASKS), "--out", str(out), "--no-figure", *args])
    assert result.returncode == 0, result.stderr[-3000:]
    with np.load(out / "lava_results.npz") as data:
        arrays = {k: data[k] for k in data.files}
    print(f"\n{(out / 'lava_report.txt').read_text()}")
    return json.loads((out / "lava_report.json").read_text()), arrays


@pytest.mark.parametrize("kind", KINDS)
def test_float_lava_eprop1_update_equals_the_exported_update(exports, kind, tmp_path):
    """Readout, error and B in Lava: the learning signal the neurons receive and the update both equal the
    exported PyTorch ones to float tolerance (float32 export against float64 Lava)."""
    report, arrays = _run(exports[kind], tmp_path / "module", "--signal", "module")
    assert report["learning_signal"].startswith("readout, output error and feedback B in Lava")
    assert report["pairing"] == "shadow"
    eta = json.loads((exports[kind] / "rule.json").read_text())["eta"]
    with np.load(exports[kind] / "demonstrations.npz") as d:
        for task in report["tasks"]:
            k = task["task"]
            assert task["signal_relative_error"] < 1e-5, task
            assert task["spikes_demo"]["agreement"] >= 0.999 and task["spikes_test"]["agreement"] >= 0.999, task
            assert task["w_rec_diagonal_max_abs_dw"] == 0.0
            for name, key in (("w_in", "dw_in"), ("w_rec", "dw_rec")):
                f = task["vs_pytorch_float"][name]
                assert f["relative_error"] < 1e-4 and f["correlation"] >= 0.9999, (k, name, f)
                scale = np.abs(d[key][k]).max()
                assert scale > 0
                np.testing.assert_allclose(-arrays[key][k] / eta, d[key][k], rtol=1e-4, atol=1e-5 * scale)
            np.testing.assert_allclose(arrays["signal"][k], d["signals"][k], rtol=1e-4,
                                       atol=1e-6 * np.abs(d["signals"][k]).max())
            assert abs(task["mse_cart_lava"] - task["mse_cart_pytorch"]) <= 1e-3 * task["mse_cart_pytorch"] + 1e-6


def test_replayed_and_fixed_point_eprop1_runs_follow_the_export(exports, tmp_path):
    """The replayed signal gives the same float update; the fixed-point models follow the exported learning-engine
    emulation up to stochastic rounding."""
    report, _ = _run(exports["random"], tmp_path / "replay", "--signal", "replay")
    assert report["learning_signal"].startswith("replayed")
    for task in report["tasks"]:
        for name in ("w_in", "w_rec"):
            assert task["vs_pytorch_float"][name]["relative_error"] < 1e-4, (task["task"], name)
    report, arrays = _run(exports["random"], tmp_path / "fixed", "--precision", "fixed")
    assert report["precision"] == "fixed"
    for task in report["tasks"]:
        q = task["vs_fixed_emulation"]
        for name in ("w_in", "w_rec"):
            assert q[f"tag_{name}"]["correlation"] >= 0.9, (task["task"], name, q)
        assert task["w_rec_diagonal_max_abs_dw"] == 0.0 and np.isfinite(task["mse_cart_lava"])
    assert np.all(np.abs(arrays["tag_rec"]) <= 257) and np.all(np.abs(arrays["w_rec_register"]) <= 256)


def test_hardware_run_runs_an_eprop1_export(exports, tmp_path, capsys):
    """``eprop-l2l hardware run``, the command a user types, on an e-prop 1 export with B in Lava."""
    out = tmp_path / "cli"
    code = main(["hardware", "run", str(exports["symmetric"]), "--tasks", "1", "--signal", "module",
                 "--out", str(out), "--no-figure"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "lava_report.json").read_text())
    assert report["n_tasks"] == 1 and report["mean"]["relerr_w_in"] < 1e-4
