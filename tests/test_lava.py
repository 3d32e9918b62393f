"""Hardware export II: the one-shot e-prop rule on Loihi 2's learning engine, simulated by Lava (lava-nc 0.10.0).

The Lava program (``eprop_l2l/hardware/lava``) runs in ``.venv-lava`` (CPython 3.10, no torch), started as a
subprocess the way ``eprop-l2l hardware run`` starts it. The model is a ``tiny``-preset run trained here and
exported with five held-out movements (20 LIF learner, 12 LIF error module, 100 steps); docs/lava.md has the
numbers of the 400-neuron GPU run. These tests skip only where no CPython 3.10 exists (``make lava-env``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from eprop_l2l.cli import main
from eprop_l2l.hardware.description import READ_VERSIONS
from eprop_l2l.hardware.lava import launcher
from tests.processes import alive

ROOT = Path(__file__).resolve().parent.parent
LAVA_PY = ROOT / ".venv-lava" / "bin" / "python"
QUIET = ("wandb.mode=disabled", "run.progress=false")
N_TASKS = 5
UNKNOWN_VERSION = max(READ_VERSIONS) + 1  # the first format version this reader does not read


def _python310() -> str | None:
    try:
        pyenv = subprocess.run(["pyenv", "root"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pyenv = ""
    for candidate in ([f"{pyenv}/versions/3.10.13/bin/python"] if pyenv else []) + ["python3.10"]:
        try:
            if subprocess.run([candidate, "-c", ""], capture_output=True, timeout=30).returncode == 0:
                return candidate
        except (OSError, subprocess.SubprocessError):
            continue
    return None


if _python310() is None:
    pytest.skip("no CPython 3.10 on this machine: Lava needs it (`make lava-env` creates .venv-lava)",
                allow_module_level=True)


def lava_processes(marker: str) -> list[str]:
    """Processes still alive whose command line names ``marker`` (the Lava runtime's processes are forks of the
    program and carry its command line)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline and launcher.MODULE in cmdline:
            found.append(f"{entry.name}: {cmdline[:120]}")
    return found


def run_lava(args: list[str], timeout: float = 900) -> subprocess.CompletedProcess:
    """The Lava program as `eprop-l2l hardware run` starts it; asserts that no Lava process outlives it."""
    if not LAVA_PY.exists():
        pytest.fail(f"{LAVA_PY} missing although CPython 3.10 exists: run `make lava-env` (make test does)")
    result = launcher.run(args, timeout=timeout, python=LAVA_PY, capture=True)
    marker = args[args.index("--out") + 1] if "--out" in args else args[0]
    assert lava_processes(marker) == [], "Lava processes outlived the program"
    return result


def resign(directory: Path) -> None:
    """Recompute the manifest's SHA-256 entries after a deliberate edit."""
    manifest = json.loads((directory / "manifest.json").read_text())
    for name in manifest["files"]:
        manifest["files"][name] = hashlib.sha256((directory / name).read_bytes()).hexdigest()
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    base = tmp_path_factory.mktemp("lava")
    run_dir, out = base / "run", base / "export"
    assert main(["train", "experiment=tiny", f"run.dir={run_dir}", *QUIET]) == 0
    assert main(["export", str(run_dir), "--target", "lava", "--out", str(out), "--tasks", str(N_TASKS),
                 "--calibration-tasks", "2"]) == 0
    return out


def _report(export_dir: Path, precision: str, tmp: Path) -> tuple[dict, dict]:
    out = tmp / f"report_{precision}"
    result = run_lava([str(export_dir), "--tasks", str(N_TASKS), "--precision", precision, "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "lava_report.json").read_text())
    with np.load(out / "lava_results.npz") as data:
        arrays = {k: data[k] for k in data.files}
    print(f"\n{(out / 'lava_report.txt').read_text()}")
    return report, arrays


@pytest.fixture(scope="module")
def float_run(export_dir, tmp_path_factory):
    return _report(export_dir, "float", tmp_path_factory.mktemp("float"))


@pytest.fixture(scope="module")
def fixed_run(export_dir, tmp_path_factory):
    return _report(export_dir, "fixed", tmp_path_factory.mktemp("fixed"))


def test_lava_float_update_equals_the_exported_eprop_update(float_run, export_dir):
    report, arrays = float_run
    assert report["n_tasks"] == N_TASKS and report["learning_signal"].startswith("replayed")
    with np.load(export_dir / "demonstrations.npz") as d:
        eta = json.loads((export_dir / "rule.json").read_text())["eta"]
        for task in report["tasks"]:
            for name in ("w_in", "w_rec"):
                f = task["vs_pytorch_float"][name]
                assert f["correlation"] >= 0.99, (task["task"], name, f)
                assert f["relative_error"] < 1e-4, (task["task"], name, f)  # float32 export vs float64 Lava
            assert task["w_rec_diagonal_max_abs_dw"] == 0.0  # no self-connection is learned
            # the arithmetic is the same up to float32/float64 rounding: spikes agree in both trials
            assert task["spikes_demo"]["agreement"] >= 0.999 and task["spikes_test"]["agreement"] >= 0.999, task
            assert abs(task["mse_cart_lava"] - task["mse_cart_pytorch"]) <= 1e-3 * task["mse_cart_pytorch"] + 1e-6
        k = report["tasks"][0]["task"]
        scale = np.abs(d["dw_in"][k]).max()
        np.testing.assert_allclose(-arrays["dw_in"][k] / eta, d["dw_in"][k], rtol=1e-4, atol=1e-6 * scale)
        assert arrays["z_demo"].shape == d["z_demo"].shape and arrays["y_test"].shape == d["y_test"].shape


def test_lava_fixed_point_update_follows_the_exported_loihi_emulation(fixed_run):
    report, arrays = fixed_run
    assert report["precision"] == "fixed"
    for task in report["tasks"]:
        q = task["vs_fixed_emulation"]
        for name in ("w_in", "w_rec"):
            # Lava's engine rounds stochastically with its own generator: equal up to rounding noise
            assert q[f"tag_{name}"]["correlation"] >= 0.9, (task["task"], name, q)
            assert q[f"tag_{name}"]["relative_error"] <= 0.5, (task["task"], name, q)
        assert task["w_rec_diagonal_max_abs_dw"] == 0.0
        assert np.isfinite(task["mse_cart_lava"])
    assert np.all(np.abs(arrays["tag_rec"]) <= 257) and np.all(np.abs(arrays["w_rec_register"]) <= 256)
    print("fixed point vs emulation, mean relative error of the tags: "
          f"w_in {report['mean']['fixed_tag_w_in_relative_error']:.3f}, "
          f"w_rec {report['mean']['fixed_tag_w_rec_relative_error']:.3f}")


def test_the_error_module_in_lava_reproduces_the_learning_signal_and_the_update(export_dir, tmp_path):
    """The error module runs in Lava too: it sees the learner's spikes of the same step one Dense hop later, its
    L^t reaches the learner two steps after ψ^t, and the learning copies of the synapses are fed three steps late
    (shadow pairing), so the update is still e-prop's exactly."""
    out = tmp_path / "module"
    result = run_lava([str(export_dir), "--tasks", "2", "--signal", "module", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "lava_report.json").read_text())
    assert report["pairing"] == "shadow" and report["learning_signal"].startswith("error module")
    for task in report["tasks"]:
        assert task["signal_relative_error"] < 1e-5, task
        assert task["spikes_demo"]["agreement"] >= 0.999 and task["spikes_test"]["agreement"] >= 0.999, task
        for name in ("w_in", "w_rec"):
            assert task["vs_pytorch_float"][name]["correlation"] >= 0.99, (task["task"], name)
            assert task["vs_pytorch_float"][name]["relative_error"] < 1e-4, (task["task"], name)


def test_the_error_module_at_fixed_point_in_lava_equals_its_emulation(export_dir, tmp_path):
    """``--signal module --precision fixed``: the module's integer neurons and signal filter in Lava
    (``number_format.error_module``) give, from the learner spikes Lava produced, the learning signal of the torch
    emulation (hardware/fixed_module.py) bit for bit."""
    import torch

    from eprop_l2l.error_modules.base import Observation
    from eprop_l2l.hardware.fixed_module import FixedModule
    from eprop_l2l.hardware.rule import build_model, load_rule

    out = tmp_path / "module_fixed"
    result = run_lava([str(export_dir), "--tasks", "1", "--signal", "module", "--precision", "fixed",
                       "--out", str(out), "--no-figure"])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "lava_report.json").read_text())
    assert report["precision"] == "fixed" and report["learning_signal"].startswith("error module")
    with np.load(out / "lava_results.npz") as data:
        z, signal = data["z_demo"][0], data["signal"][0]
    with np.load(export_dir / "demonstrations.npz") as data:
        x, context = data["x"][0], data["context"][0]
    rule, weights = load_rule(export_dir)
    module = FixedModule(rule, weights, build_model(rule).module)
    assert module.record == rule.number_format.engine["error_module"]
    state, emulated = module.init_state(1), []
    for t in range(x.shape[0]):
        obs = Observation(spikes=torch.as_tensor(z[t : t + 1], dtype=torch.float64),
                          inputs=torch.as_tensor(x[t : t + 1], dtype=torch.float64),
                          context=torch.as_tensor(context[t : t + 1], dtype=torch.float64))
        state, value = module.step(None, state, obs)
        emulated.append(value[0].numpy())
    emulated = np.stack(emulated)
    assert np.abs(emulated).max() > 0
    print(f"\nfixed-point module in Lava: L {signal.shape}, max |L| {np.abs(signal).max():.4g}, "
          f"{np.count_nonzero(signal)} nonzero")
    np.testing.assert_array_equal(signal, emulated)  # integers in units of 2^signal_exp: equal, not close
    task = report["tasks"][0]
    for name in ("w_in", "w_rec"):
        assert task["vs_fixed_emulation"][f"tag_{name}"]["correlation"] >= 0.8, (name, task)
    refused = json.loads((export_dir / "rule.json").read_text())
    bad = tmp_path / "no_module_format"
    shutil.copytree(export_dir, bad)
    del refused["number_format"]["error_module"]
    (bad / "rule.json").write_text(json.dumps(refused))
    resign(bad)
    _one_line_exit_2(run_lava([str(bad), "--signal", "module", "--precision", "fixed",
                               "--out", str(tmp_path / "refused")]), "number_format.error_module")


def test_the_split_third_factor_runs_on_lavas_fixed_point_engine(export_dir, tmp_path):
    """ψL split over y2 + 2^-8·y3 on Lava (``--precision loihi_split``): the neuron sends y1 = 1 and the residual in
    y3, the rule's y3 terms carry 2^-8 of the y2 term's scale; its tags follow the split emulation as the one-y2
    run follows its own. An export whose y register is not 8 bits is refused in one line."""
    split = tmp_path / "split"
    assert main(["export", str(export_dir.parent / "run"), "--target", "lava", "--out", str(split), "--tasks",
                 str(N_TASKS), "--calibration-tasks", "2", "--precision", "loihi_split"]) == 0
    assert json.loads((split / "rule.json").read_text())["number_format"]["y_split"] is True
    # this small run's tag scale puts the compensated pairing's y3 correction below the engine's literals
    _one_line_exit_2(run_lava([str(split), "--precision", "fixed", "--out", str(tmp_path / "compensated")]),
                     "split correction", "--pairing shadow")
    out = tmp_path / "report"
    result = run_lava([str(split), "--precision", "fixed", "--pairing", "shadow", "--out", str(out)])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((out / "lava_report.json").read_text())
    for task in report["tasks"]:
        for name in ("w_in", "w_rec"):
            q = task["vs_fixed_emulation"][f"tag_{name}"]
            assert q["correlation"] >= 0.9 and q["relative_error"] <= 0.5, (task["task"], name, q)
        assert task["w_rec_diagonal_max_abs_dw"] == 0.0
    with np.load(out / "lava_results.npz") as data:
        assert np.any(data["y2"] != 0)
    bad = tmp_path / "wide_y"
    shutil.copytree(split, bad)
    rule = json.loads((bad / "rule.json").read_text())
    rule["number_format"]["y_bits"] = 9
    (bad / "rule.json").write_text(json.dumps(rule))
    resign(bad)
    _one_line_exit_2(run_lava([str(bad), "--precision", "fixed", "--pairing", "shadow",
                               "--out", str(tmp_path / "refused")]), "number_format.y_bits")


def test_an_alif_error_module_exports_and_runs_in_lava(tmp_path):
    """Natural e-prop's learning-signal generator mixes LIF and ALIF neurons: such a module exports, and in Lava
    it reproduces the exported learning signal and the update as the LIF module does."""
    run_dir, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "experiment=tiny", "optim.n_iterations=3", "error_module.cell=alif",
                 "error_module.n_adaptive=5", "error_module.beta=0.5", "error_module.tau_a=60", f"run.dir={run_dir}",
                 *QUIET]) == 0
    assert main(["export", str(run_dir), "--target", "lava", "--out", str(out), "--tasks", "2",
                 "--calibration-tasks", "1"]) == 0
    rule = json.loads((out / "rule.json").read_text())
    assert rule["learning_signal"]["neurons"]["model"] == "alif"
    result = run_lava([str(out), "--tasks", "2", "--signal", "module", "--out", str(tmp_path / "module")])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "module" / "lava_report.json").read_text())
    for task in report["tasks"]:
        assert task["signal_relative_error"] < 1e-5, task
        for name in ("w_in", "w_rec"):
            assert task["vs_pytorch_float"][name]["correlation"] >= 0.99, (task["task"], name)
            assert task["vs_pytorch_float"][name]["relative_error"] < 1e-4, (task["task"], name)


def test_hardware_run_replaces_only_an_earlier_report(export_dir, tmp_path):
    """--out must be new or empty; --force replaces an earlier report and nothing else; refused before compute."""
    out = tmp_path / "report"
    args = [str(export_dir), "--tasks", "1", "--no-figure", "--out", str(out)]
    assert run_lava(args).returncode == 0
    _one_line_exit_2(run_lava(args), "--out")  # an earlier report, without --force
    assert run_lava([*args, "--force"]).returncode == 0
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _one_line_exit_2(run_lava([str(export_dir), "--out", str(foreign), "--force"]), "--out")
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and (foreign / "notes.txt").read_text() == "mine"


def test_sigterm_to_hardware_run_ends_the_lava_program_and_leaves_no_report(export_dir, tmp_path):
    """`eprop-l2l hardware run` stopped with SIGTERM mid-run: exit 130 in one line, no Lava process left (the
    program's pid included), no report written then or later, no staging folder."""
    import signal
    import sys
    import time

    out = tmp_path / "report"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "eprop_l2l.cli", "hardware", "run", str(export_dir), "--tasks",
                             str(N_TASKS), "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while len(lava_processes(str(out))) < 2:  # the program and its first Lava runtime process
        assert proc.poll() is None and time.time() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.2)  # into the run (a signal that lands while the program forks is answered by the second one)
    program = [int(line.split(":")[0]) for line in lava_processes(str(out))]
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err.strip().splitlines()[-1] == "eprop-l2l: interrupted", err
    deadline = time.time() + 10  # SIGKILL is delivered asynchronously: a runtime process may take a moment to end
    while (lava_processes(str(out)) or any(alive(pid) for pid in program)) and time.time() < deadline:
        time.sleep(0.05)
    assert lava_processes(str(out)) == [] and not any(alive(pid) for pid in program)
    time.sleep(2)
    assert not out.exists() and list(tmp_path.iterdir()) == []
    if "Exception ignored" in err:  # printed by the Lava program, not by eprop-l2l: the rest holds
        pytest.xfail("hardware/lava/run.py's SIGTERM handler raises SystemExit inside an at-fork callback when the "
                     "signal lands while Lava forks a runtime process: Python prints it as 'Exception ignored'")
    assert err.strip() == "eprop-l2l: interrupted", err


def test_a_rule_that_diverges_from_the_export_fails_the_check(export_dir, tmp_path):
    """Perturbing the exported trace decay changes Lava's update, not the reference: the correlation drops."""
    bad = tmp_path / "perturbed"
    shutil.copytree(export_dir, bad)
    rule = json.loads((bad / "rule.json").read_text())
    for conn in rule["plastic"]:
        conn["trace"]["decay"] = 0.5
    (bad / "rule.json").write_text(json.dumps(rule, indent=2))
    resign(bad)
    result = run_lava([str(bad), "--tasks", "2", "--precision", "float", "--out", str(tmp_path / "out")])
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "lava_report.json").read_text())
    worst = min(t["vs_pytorch_float"][n]["correlation"] for t in report["tasks"] for n in ("w_in", "w_rec"))
    assert worst < 0.99, worst
    assert all(t["spikes_demo"]["identical"] for t in report["tasks"])  # the dynamics are untouched


def _one_line_exit_2(result: subprocess.CompletedProcess, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.mark.parametrize("case", ["manifest_version", "rule_version", "foreign_format", "tampered", "missing_file"])
def test_incompatible_artefacts_give_one_line_and_exit_2(export_dir, tmp_path, case):
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    expected = {"manifest_version": "format version", "rule_version": "format version",
                "foreign_format": "format", "tampered": "sha256", "missing_file": "missing"}[case]
    if case == "manifest_version":
        manifest["format_version"] = UNKNOWN_VERSION
        (bad / "manifest.json").write_text(json.dumps(manifest))
    elif case == "foreign_format":
        manifest["format"] = "something-else"
        (bad / "manifest.json").write_text(json.dumps(manifest))
    elif case == "rule_version":
        rule = json.loads((bad / "rule.json").read_text())
        rule["format_version"] = UNKNOWN_VERSION
        (bad / "rule.json").write_text(json.dumps(rule))
        resign(bad)
    elif case == "tampered":
        with (bad / "weights.npz").open("ab") as handle:
            handle.write(b"\0")
    else:
        (bad / "demonstrations.npz").unlink()
    out = tmp_path / "out"
    _one_line_exit_2(run_lava([str(bad), "--out", str(out)]), expected)
    assert not out.exists()  # nothing half-written


def test_an_alif_learner_runs_its_exact_rule_in_lava(tmp_path):
    """An ALIF learner's eligibility needs ε_a per synapse: the learning engine's d holds it (its own sum of
    products, dd), the tag subtracts it, and the update equals the exported (exact) one, whose difference from the
    rule that drops ε_a tests/test_export_alif.py pins (> 2 %). Lava's fixed-point models are refused."""
    run_dir, out = tmp_path / "run", tmp_path / "export"
    assert main(["train", "experiment=tiny", "optim.n_iterations=1", "model.cell=alif", "model.n_adaptive=12",
                 f"run.dir={run_dir}", *QUIET]) == 0
    assert main(["export", str(run_dir), "--target", "lava", "--out", str(out), "--tasks", "2",
                 "--calibration-tasks", "1"]) == 0
    assert json.loads((out / "rule.json").read_text())["adaptation"]
    for signal, tasks in (("replay", "2"), ("module", "1")):  # compensated and shadow pairing
        result = run_lava([str(out), "--tasks", tasks, "--signal", signal, "--out", str(tmp_path / signal)])
        assert result.returncode == 0, result.stderr[-3000:]
        report = json.loads((tmp_path / signal / "lava_report.json").read_text())
        for task in report["tasks"]:
            assert task["spikes_demo"]["agreement"] == 1.0 and task["spikes_test"]["agreement"] == 1.0, task
            assert task["w_rec_diagonal_max_abs_dw"] == 0.0  # sgn(w)² masks the diagonal
            for name in ("w_in", "w_rec"):
                assert task["vs_pytorch_float"][name]["relative_error"] < 1e-5, (signal, task["task"], name)
    _one_line_exit_2(run_lava([str(out), "--precision", "fixed", "--out", str(tmp_path / "refused")]),
                     "--precision fixed: an ALIF learner")
    assert not (tmp_path / "refused").exists()


def test_bad_arguments_give_one_line_and_exit_2(export_dir, tmp_path):
    out = tmp_path / "out"
    _one_line_exit_2(run_lava([str(tmp_path / "nowhere"), "--out", str(out)]), "no such export directory")
    _one_line_exit_2(run_lava([str(export_dir), "--tasks", "99", "--out", str(out)]), "--tasks")
    _one_line_exit_2(run_lava([str(export_dir), "--precision", "double", "--out", str(out)]), "--precision")
    _one_line_exit_2(run_lava([str(export_dir), "--timeout", "inf", "--out", str(out)]), "--timeout", "finite")
    assert not out.exists()


def test_without_a_lava_environment_the_launcher_names_make_lava_env(tmp_path, capsys, monkeypatch):
    with pytest.raises(launcher.LavaUnavailable, match="make lava-env"):
        launcher.lava_python(root=tmp_path)
    monkeypatch.setenv(launcher.ENV_VAR, str(tmp_path / "no-python"))
    assert launcher.main([str(tmp_path)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "make lava-env" in lines[0], lines


def test_make_lava_env_without_python_3_10_says_so_in_one_line(tmp_path):
    result = subprocess.run(["make", "--no-print-directory", "-s", "lava-env", "PYTHON310=",
                             f"LAVA_VENV={tmp_path / 'venv'}"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            env={**os.environ, "MAKEFLAGS": ""})
    assert result.returncode != 0
    own = [line for line in result.stderr.splitlines() if line.startswith("make lava-env:")]
    assert len(own) == 1 and "3.10" in own[0], result.stderr
    assert not (tmp_path / "venv").exists()


def test_the_lava_package_imports_no_torch():
    code = ("import sys, eprop_l2l.hardware.lava.run, eprop_l2l.hardware.lava.launcher, "
            "eprop_l2l.hardware.lava.network; assert 'torch' not in sys.modules, 'torch imported'")
    result = subprocess.run([str(LAVA_PY), "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-2000:]
