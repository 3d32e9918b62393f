"""The researcher's path: evaluations never overwrite results and carry their provenance; the CLI lists its
presets and validates `--cfg`; the Python API (`eprop_l2l.api`, the README example on the committed GPU run);
the one-shot figure's data; `eprop-l2l plot` (training curves, multirun summary)."""

from __future__ import annotations

import csv
import importlib.metadata
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

import eprop_l2l
from eprop_l2l.cli import main
from eprop_l2l.config.catalog import config_groups
from eprop_l2l.runs.evaluation import evaluation_name

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "docs" / "results" / "arm_gpu"
QUIET = ("wandb.mode=disabled", "run.progress=false")
OUTPUTS = ("metrics.json", "per_task.json", "one_shot.png", "config.yaml", "history.jsonl")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("researcher") / "tiny"
    assert main(["train", "experiment=tiny", "optim.n_iterations=4", "eval.n_tasks=6", f"run.dir={run_dir}",
                 *QUIET]) == 0
    return run_dir


def _snapshot(run_dir: Path) -> dict:
    return {name: (run_dir / name).read_bytes() for name in OUTPUTS}


# ------------------------------------------------------------------------ 1. evaluations never destroy results

def test_evaluate_writes_a_new_directory_with_provenance_and_never_overwrites(tiny_run, capsys):
    before = _snapshot(tiny_run)
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    first = tiny_run / "evaluations" / evaluation_name([])
    checkpoint = tiny_run / "checkpoints" / "ckpt_00000004.pt"
    assert out.splitlines()[0] == (f"evaluating {checkpoint} (iteration 4, trained on cpu) on cpu: 6 held-out "
                                   f"tasks (seed 12345) → {first}")
    metrics = json.loads((first / "metrics.json").read_text())
    assert {k: metrics[k] for k in ("run", "checkpoint", "iterations", "experiment", "trained_on", "training_seed",
                                    "evaluated_on", "overrides", "seed", "n_tasks")} == {
        "run": str(tiny_run), "checkpoint": str(checkpoint), "iterations": 4, "experiment": "tiny",
        "trained_on": "cpu", "training_seed": 0, "evaluated_on": "cpu", "overrides": [], "seed": 12345, "n_tasks": 6}
    assert metrics["eprop_l2l_version"] == eprop_l2l.__version__
    training = json.loads(before["metrics.json"])
    assert metrics["mse_cart_after"] == training["mse_cart_after"]  # same checkpoint, same held-out tasks
    assert sorted(p.name for p in first.iterdir()) == ["metrics.json", "one_shot.png", "per_task.json"]
    # the same evaluation again: a new directory, the first one kept, the message says which
    kept = (first / "metrics.json").read_bytes()
    assert main(["evaluate", str(tiny_run)]) == 0
    out = capsys.readouterr().out
    assert f"{first} exists (kept): writing this evaluation to {first.name}_2 instead" in out.splitlines()
    assert (first / "metrics.json").read_bytes() == kept
    assert json.loads((first.with_name(first.name + "_2") / "metrics.json").read_text())["mse_cart_after"] == \
        metrics["mse_cart_after"]
    assert _snapshot(tiny_run) == before  # the training's own outputs untouched throughout


def test_evaluate_out_must_be_new_or_empty(tiny_run, tmp_path, capsys):
    before = _snapshot(tiny_run)
    capsys.readouterr()
    assert main(["evaluate", str(tiny_run), "--out", str(tiny_run), "eval.figures=false"]) == 2
    assert capsys.readouterr().err == (f"eprop-l2l: --out: {tiny_run} exists and is not empty: an evaluation never "
                                       "overwrites results; choose a new directory\n")
    assert _snapshot(tiny_run) == before
    target = tmp_path / "mine"
    assert main(["evaluate", str(tiny_run), "--out", str(target), "inner.n_updates=0", "eval.figures=false"]) == 0
    metrics = json.loads((target / "metrics.json").read_text())
    assert metrics["overrides"] == ["inner.n_updates=0", "eval.figures=false"]
    assert metrics["mse_cart_after"] == metrics["mse_cart_before"]


def test_evaluation_names_are_readable_and_unique():
    assert evaluation_name([]) == "as_trained-e3b0c442"  # sha256 of the empty list
    assert evaluation_name(["inner.n_updates=0"]) == "inner.n_updates=0-" + \
        __import__("hashlib").sha256(b"inner.n_updates=0").hexdigest()[:8]
    long = ["eval.reinit=[" + ",".join(f"prefix_{i}" for i in range(30)) + "]"]
    a, b = evaluation_name([*long, "eval.n_tasks=10"]), evaluation_name([*long, "eval.n_tasks=20"])
    assert a[:100] == b[:100] and a != b and len(a) == len(b) == 109
    assert evaluation_name(["a=[x]"]) != evaluation_name(["a=(x)"])  # same readable part, other override


# ------------------------------------------------------------------------------------------ 2. the CLI


def test_train_help_lists_every_preset_and_group_option(capsys):
    assert main(["train", "--help"]) == 0
    text = re.sub(r"\s+", " ", capsys.readouterr().out)
    groups = config_groups()
    assert set(groups) == {"experiment", "task", "model", "error_module", "inner"}
    assert sorted(groups["experiment"]) == ["cpu", "cpu_hour", "demo", "gpu", "natural_cpu", "natural_paper", "paper",
                                          "small", "tiny"]
    for group, options in groups.items():
        assert f"{group}=" in text
        for option, description in options.items():
            assert description and not description.startswith("@"), (group, option)
            assert f"{option} {description}" in text, (group, option)
    assert groups["model"]["lif"] == "learning network: LIF neurons (the authors' setting)"


@pytest.mark.parametrize(("args", "message"), [
    (["train", "--cfg", "model.tau_m=-1"], "model.tau_m: must be > 0, got -1.0"),
    (["train", "--cfg", "experiment=nope"],
     "experiment: unknown value 'nope' (choose from cpu, cpu_hour, demo, gpu, natural_cpu, natural_paper, paper, "
     "small, tiny)"),
    (["train", "--cfg", "error_module=nope"],
     "error_module: unknown value 'nope' (choose from learned, lstm, natural, random_feedback)"),
    (["train", "-m", "--cfg", "inner=eprop,sgd"], "inner: unknown value 'sgd' (choose from bptt, eprop)"),
    (["train", "--cfg", "experiment=tiny", "run.device=tpu"], "run.device: must be cpu, cuda or cuda:N, got 'tpu'"),
])
def test_cfg_validates_like_train(args, message, capsys):
    assert main(args) == 2
    captured = capsys.readouterr()
    assert captured.err == f"eprop-l2l: {message}\n" and captured.out == ""


def test_version_and_renamed_demo(capsys, monkeypatch):
    assert eprop_l2l.__version__ == importlib.metadata.version("eprop_l2l")
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"eprop-l2l {eprop_l2l.__version__}\n"

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    declared = re.search(r'^version = "(.+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1)
    assert eprop_l2l._version() == declared  # a source checkout that is not installed
    monkeypatch.undo()
    assert main(["demo"]) == 2  # `make demo` is e-prop 2; the e-prop 1 demo has its own name
    assert "invalid choice: 'demo'" in capsys.readouterr().err
    assert main(["demo-eprop1", "--iterations", "0"]) == 2
    assert capsys.readouterr().err == "eprop-l2l: --iterations: must be >= 1, got 0\n"
    assert main(["demo-eprop1", "--feedback", "learned"]) == 2  # the kinds are the feedback module's
    assert capsys.readouterr().err == ("eprop-l2l: --feedback: unknown value 'learned' "
                                       "(choose from symmetric, random, adaptive)\n")


# ------------------------------------------------------------------------------------------ 3. the API


def test_hand_path_inverse_kinematics_round_trips():
    from eprop_l2l.errors import ConfigError
    from eprop_l2l.task_families.arm import ArmBrownian, ArmSines, arm_forward, joint_velocities_from_hand

    for family in (ArmSines(dt_ms=1.0), ArmBrownian(dt_ms=1.0), ArmSines(n_steps=100, dt_ms=2.0)):
        batch = family.sample(16, torch.Generator().manual_seed(1), dtype=torch.float64)
        hand = batch.extra["hand"]
        omega = joint_velocities_from_hand(hand, dt_ms=family.dt_ms)
        assert (arm_forward(omega, dt_ms=family.dt_ms) - hand).abs().max() <= 1e-6
        # the targets' ω, except where the folded arm puts the hand on the shoulder (any shoulder angle fits:
        # interpolated) — the families reach that posture at their travel limit
        folded = hand.norm(dim=-1) < 1e-6
        folded[:, 1:] |= folded[:, :-1].clone()
        assert folded.any() and folded.float().mean() < 0.01
        error = (omega - batch.targets).abs().amax(-1)
        assert error[~folded].max() <= 1e-6 * batch.targets.abs().max() and error[folded].max() < 2.0
    far = torch.tensor([[0.5, 0.5], [1.2, 0.0]], dtype=torch.float64)
    with pytest.raises(ConfigError, match=r"^hand_path: step 1 is out of the arm's reach \(distance from the "
                                          r"shoulder 1\.2, reach \[0, 1\]\)$"):
        joint_velocities_from_hand(far, dt_ms=1.0)


@pytest.fixture(scope="module")
def trained():
    from eprop_l2l.api import load_run

    return load_run(TRAINED)


def test_adapt_is_the_evaluation_of_that_movement(trained):
    from eprop_l2l.meta.evaluate import evaluate_one_shot

    generator = torch.Generator().manual_seed(7)
    omega = trained.family.joint_velocities(1, generator)[0]
    adaptation = trained.adapt(joint_velocities=omega, generator=generator)
    summary, per_task, _ = evaluate_one_shot(trained.learner, trained.meta, trained.family, n_tasks=1, seed=7,
                                             batch_size=1, example=False)
    for key in ("mse_cart_before", "mse_cart_after", "mse_motor_before", "mse_motor_after", "hand_rmse_after"):
        assert getattr(adaptation, key) == per_task[key][0], key
    assert adaptation.fast_weights["w_rec"].shape == (400, 400) and set(adaptation.fast_weights) == {"w_in", "w_rec"}
    assert not torch.equal(adaptation.fast_weights["w_rec"], trained.meta["network"]["w_rec"])
    assert adaptation.learning_signals.shape == (500, 400)
    # the same movement as a hand path: the same adaptation up to the inverse kinematics' rounding
    again = trained.adapt(hand_path=adaptation.target_hand.to(torch.float64), generator=None, seed=0)
    assert again.mse_motor_after == pytest.approx(trained.adapt(joint_velocities=omega, seed=0).mse_motor_after,
                                                  rel=1e-4)
    from eprop_l2l.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^adapt: give exactly one of"):
        trained.adapt()
    with pytest.raises(ConfigError, match=r"^joint_velocities: must have shape \[T, 2\], got \[500, 3\]$"):
        trained.adapt(joint_velocities=torch.zeros(500, 3))
    bad = torch.zeros(500, 2)
    bad[3, 1] = float("nan")
    with pytest.raises(ConfigError, match=r"^joint_velocities: holds NaN or infinite values$"):
        trained.adapt(joint_velocities=bad)
    with pytest.raises(ConfigError, match=r"^hand_path: holds NaN or infinite values$"):
        trained.adapt(hand_path=torch.full((500, 2), float("inf")))
    with pytest.raises(ConfigError, match=r"^joint_velocities: must have 1 to 100,000 steps, got 10,000,000$"):
        trained.adapt(joint_velocities=torch.zeros(10_000_000, 2))


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_load_run_on_a_missing_gpu_is_refused_not_replaced():
    from eprop_l2l.api import load_run
    from eprop_l2l.errors import ConfigError

    with pytest.raises(ConfigError, match=r"^run.device: 'cuda': CUDA is not available on this machine$"):
        load_run(TRAINED, device="cuda")


def _readme_block(heading: str) -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_python_api_example_runs(capsys, monkeypatch):
    monkeypatch.chdir(ROOT)
    namespace = {}
    exec(compile(_readme_block("## Python API"), "README.md (Python API)", "exec"), namespace)
    printed = capsys.readouterr().out
    assert printed == "MSE_cart 0.1221 → 0.0080, RMS hand error 0.494 → 0.126\nMSE_motor 16.84 (rad/s)²\n"
    assert printed.splitlines()[0] in (ROOT / "README.md").read_text()  # the README states what it prints
    adaptation = namespace["adaptation"]
    assert adaptation.hand_after.shape == (500, 2) and math.isfinite(adaptation.mse_cart_after)


def test_package_ships_py_typed():
    assert (ROOT / "eprop_l2l" / "py.typed").exists()
    assert '"py.typed"' in (ROOT / "pyproject.toml").read_text()


# ------------------------------------------------------------------------------------------ 4. the figure


def _figure(learner, meta, family, n_tasks=6):
    import matplotlib.pyplot as plt

    from eprop_l2l.meta.evaluate import evaluate_one_shot
    from eprop_l2l.task_families.arm_figure import figure_one_shot

    summary, per_task, (batch, out, index) = evaluate_one_shot(learner, meta, family, n_tasks=n_tasks, batch_size=4)
    figures = []
    original = plt.close
    plt.close = figures.append
    try:
        data = figure_one_shot(Path("/dev/null"), batch, out, per_task=per_task, index=index)
    finally:
        plt.close = original
    original(figures[0])
    return per_task, index, data, figures[0]


def test_figure_data_median_task_paired_errors_and_centred_signals():
    from matplotlib.colors import TwoSlopeNorm

    from eprop_l2l.meta.evaluate import median_task
    from tests.test_meta_training import tiny_learner

    learner, family = tiny_learner()
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    per_task, index, data, fig = _figure(learner, meta, family)
    assert data["paired"] == {"before": per_task["mse_cart_before"], "after": per_task["mse_cart_after"]}
    assert index == median_task(per_task["mse_cart_after"]) == data["task"]
    assert sorted(per_task["mse_cart_after"]).index(per_task["mse_cart_after"][index]) == 2  # lower middle of 6
    for key in ("mse_cart", "mse_motor", "hand_rmse"):  # the example task, rerun alone, is that task
        assert data["errors"]["after"][key] == pytest.approx(per_task[f"{key}_after"][index], rel=1e-5)
        assert data["errors"]["before"][key] == pytest.approx(per_task[f"{key}_before"][index], rel=1e-5)
    limit = float(np.quantile(abs(data["signals"]), 0.99))  # symmetric limits, robust to a few large values
    assert data["signal_limit"] == pytest.approx(limit, rel=1e-12) and limit > 0
    limit = data["signal_limit"]
    images = [im for ax in fig.axes for im in ax.images]
    assert len(images) == 1 and isinstance(images[0].norm, TwoSlopeNorm)
    assert (images[0].norm.vmin, images[0].norm.vcenter, images[0].norm.vmax) == (-limit, 0.0, limit)
    assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
    assert data["hand"]["base"] == (0.0, 0.0) and data["notes"] == {}
    for key in ("raster_demonstration", "raster_test", "raster_error_module"):
        assert len(data[key]) and data[key][:, 0].max() <= data["time_ms"][-1]
    labelled = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    assert len(labelled) == 7 and all(ax.get_title() for ax in labelled)
    assert all(ax.get_ylabel() for ax in labelled)


def test_figure_says_what_an_ablation_lacks():
    import dataclasses

    from eprop_l2l.error_modules.feedback import Feedback
    from tests.test_meta_training import tiny_learner

    learner, family = tiny_learner()
    meta = learner.init_meta_params(torch.Generator().manual_seed(0))
    _, _, data, fig = _figure(dataclasses.replace(learner, n_inner_updates=0), meta, family, n_tasks=4)
    assert data["paired"]["before"] == data["paired"]["after"]
    assert set(data["notes"]) == {"raster_demonstration", "raster_error_module", "signals"}
    assert data["notes"]["signals"].startswith("no inner update (inner.n_updates=0)")
    shown = [t.get_text().replace("\n", " ") for ax in fig.axes for t in ax.texts]
    assert shown.count(data["notes"]["signals"]) == 3
    feedback = dataclasses.replace(learner, error_module=Feedback("random", 20, 2))
    meta = feedback.init_meta_params(torch.Generator().manual_seed(0))
    _, _, data, _ = _figure(feedback, meta, family, n_tasks=4)
    assert data["notes"] == {"raster_error_module": "no error module (e-prop 1): learning signals = output "
                                                    "error × feedback"}
    assert data["signals"] is not None


# ------------------------------------------------------------------------------------------ 5. plot


def test_plot_training_curves(tiny_run, capsys):
    from eprop_l2l.runs.plots import plot_curves

    capsys.readouterr()
    assert main(["plot", str(tiny_run)]) == 0
    assert capsys.readouterr().out == f"training curves (4 meta-iterations): {tiny_run / 'training_curves.png'}\n"
    assert (tiny_run / "training_curves.png").stat().st_size > 10_000
    history = [json.loads(line) for line in (tiny_run / "history.jsonl").read_text().splitlines()]
    _, data = plot_curves(tiny_run, tiny_run / "again.png")
    assert data["meta-loss"]["meta-loss (training batch)"] == ([0, 1, 2, 3], [r["loss"] for r in history])
    assert data["MSE_cart"]["validation, after one update"][0] == [0, 3]  # validate_every 10, and the last one
    assert data["meta-learned inner η"]["η"][1][0] == pytest.approx(1e-3, rel=1e-6)  # tiny: inner η starts at 1e-3
    assert data["skipped (non-finite) steps"]["total skipped"][1] == [0, 0, 0, 0]
    assert set(data["firing rate (Hz)"]) == {"learning network", "error module"}


def test_plot_multirun_summary(tmp_path, capsys):
    base = tmp_path / "sweep"
    assert main(["train", "-m", "experiment=tiny", "optim.n_iterations=1", "optim.lr=1e-3,2e-3", "eval.n_tasks=2",
                 "eval.figures=false", f"run.dir={base}", *QUIET]) == 0
    capsys.readouterr()
    assert main(["plot", str(base)]) == 0
    markdown = (base / "summary.md").read_text()
    assert capsys.readouterr().out.startswith(markdown)
    lines = markdown.splitlines()
    assert lines[0] == ("| run | optim.lr | iterations | mse_cart_before | mse_cart_after | mse_motor_after | "
                        "hand_rmse_after | rate_network_hz | rate_module_hz | inner_lr |")
    rows = list(csv.DictReader((base / "summary.csv").open()))
    runs = sorted(p for p in base.iterdir() if p.is_dir())
    assert [r["run"] for r in rows] == [p.name for p in runs] and [r["optim.lr"] for r in rows] == ["0.001", "0.002"]
    for row, run in zip(rows, runs, strict=True):
        metrics = json.loads((run / "metrics.json").read_text())
        assert float(row["mse_cart_after"]) == metrics["mse_cart_after"] and row["iterations"] == "1"
    assert lines[2].startswith(f"| {runs[0].name} | 0.001 | 1 | ")
    # the summary never goes into a run directory (issue 23's output policy); the run stays byte-identical
    before = {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()}
    assert main(["plot", str(base), "--out", str(runs[0] / "checkpoints")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--out: " in err and "inside the run directory" in err
    assert {p: p.read_bytes() for p in runs[0].rglob("*") if p.is_file()} == before
    assert main(["plot", str(tmp_path / "nowhere")]) == 2
    assert capsys.readouterr().err == f"eprop-l2l: {tmp_path / 'nowhere'}: no such run or multirun directory\n"
