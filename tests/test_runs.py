"""The run layer end to end: `eprop-l2l train` → `evaluate` on the tiny preset, exact resume after kill -9 and
SIGTERM, the bad-input corpus (one line, exit 2, no traceback), W&B offline logging, and 2-process data
parallelism (meta-gradient equal to one process)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eprop_l2l.cli import main
from eprop_l2l.runs.checkpoint import latest_checkpoint
from eprop_l2l.runs.evaluation import evaluation_name
from tests.workers import torchrun_workers

ROOT = Path(__file__).resolve().parent.parent
QUIET = ("wandb.mode=disabled", "run.progress=false")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eprop_l2l.cli", *args]


def final_meta(run_dir: Path) -> dict:
    return torch.load(latest_checkpoint(run_dir), weights_only=True)["meta"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    assert main(["train", "experiment=tiny", "optim.n_iterations=6", f"run.dir={run_dir}", *QUIET]) == 0
    return run_dir


def test_train_writes_the_run_directory_and_evaluate_reproduces_its_metrics(tiny_run, capsys):
    saved = json.loads((tiny_run / "metrics.json").read_text())
    for key in ("n_tasks", "mse_cart_before", "mse_cart_after", "mse_motor_before", "mse_motor_after",
                "hand_rmse_before", "hand_rmse_after", "rate_network_hz", "rate_module_hz", "inner_lr"):
        assert isinstance(saved[key], float | int), key
    assert saved["n_tasks"] == 8 and saved["iterations"] == 6
    assert (tiny_run / "one_shot.png").stat().st_size > 10_000
    assert (tiny_run / "config.yaml").read_text().count("n_rec: 20") == 1
    history = [json.loads(line) for line in (tiny_run / "history.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in history] == list(range(6)) and "val/mse_cart_after" in history[0]
    capsys.readouterr()
    outputs = {name: (tiny_run / name).read_bytes() for name in ("metrics.json", "per_task.json", "one_shot.png")}
    assert main(["evaluate", str(tiny_run)]) == 0
    table = capsys.readouterr().out
    assert "MSE_cart" in table and "after one update" in table
    assert {name: (tiny_run / name).read_bytes() for name in outputs} == outputs  # training outputs untouched
    again = json.loads((tiny_run / "evaluations" / evaluation_name([]) / "metrics.json").read_text())
    assert again["mse_cart_after"] == saved["mse_cart_after"]  # same checkpoint, same held-out seed


def test_evaluate_ablations_write_beside_the_run(tiny_run):
    assert main(["evaluate", str(tiny_run), "inner.n_updates=0"]) == 0
    no_update = json.loads((tiny_run / "evaluations" / evaluation_name(["inner.n_updates=0"]) / "metrics.json")
                           .read_text())
    assert no_update["mse_cart_after"] == no_update["mse_cart_before"]  # nothing adapts
    assert main(["evaluate", str(tiny_run), "eval.reinit=[em_]", "eval.figures=false"]) == 0
    frozen = json.loads((tiny_run / "evaluations" / evaluation_name(["eval.reinit=[em_]", "eval.figures=false"])
                         / "metrics.json").read_text())
    assert "em_proj" in frozen["initialised"] and "w_rec" not in frozen["initialised"]
    assert frozen["mse_cart_before"] == pytest.approx(no_update["mse_cart_before"], rel=1e-6)
    assert main(["evaluate", str(tiny_run), "error_module=random_feedback", "inner.learn_lr=false",
                 "eval.figures=false"]) == 2  # a group switch is not a dotted key: refused, one line
    assert main(["evaluate", str(tiny_run), "error_module.kind=feedback", "inner.learn_lr=false",
                 "eval.figures=false"]) == 0


def test_multirun_expands_the_sweep_into_one_run_each(tmp_path):
    base = tmp_path / "sweep"
    args = ["train", "-m", "experiment=tiny", "optim.n_iterations=1", "optim.lr=1e-3,2e-3", "run.evaluate=false",
            f"run.dir={base}", *QUIET]
    assert main(args) == 0
    runs = sorted(p.name for p in base.iterdir() if p.is_dir())
    assert runs == ["0_experiment=tiny+optim.n_iterations=1+optim.lr=0.001+run.evaluate=false+wandb.mode=disabled+"
                    "run.progress=false", "1_experiment=tiny+optim.n_iterations=1+optim.lr=0.002+run.evaluate=false+"
                    "wandb.mode=disabled+run.progress=false"]
    assert "lr: 0.002" in (base / runs[1] / "config.yaml").read_text()
    index = json.loads((base / "index.json").read_text())
    assert [(j["run_dir"], j["status"], j["differences"]) for j in index["jobs"]] == \
        [(runs[0], "done", {"optim.lr": 0.001}), (runs[1], "done", {"optim.lr": 0.002})]


def _wait_for_checkpoint(run_dir: Path, iteration: int, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = latest_checkpoint(run_dir)
        if found is not None and int(found.stem.split("_")[1]) >= iteration:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint in time")


def test_kill9_and_sigterm_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    common = ["experiment=tiny", "optim.n_iterations=30", "run.checkpoint_every=4", "run.evaluate=false", *QUIET]
    straight = tmp_path / "straight"
    assert main(["train", *common, f"run.dir={straight}"]) == 0
    resumed = tmp_path / "resumed"
    args = cli("train", *common, f"run.dir={resumed}")
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(resumed, 8, process)
    process.kill()  # SIGKILL: no handler runs, possibly mid-write
    process.wait()
    killed_at = int(latest_checkpoint(resumed).stem.split("_")[1])
    assert killed_at < 30
    process = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_checkpoint(resumed, killed_at + 4, process)
    process.send_signal(signal.SIGTERM)  # graceful: checkpoint at the current iteration, exit 143
    _, err = process.communicate(timeout=120)
    assert process.returncode in (0, 143), err  # 0 if it finished before the signal arrived
    assert main(["train", *common, f"run.dir={resumed}"]) == 0
    a, b = final_meta(straight), final_meta(resumed)
    assert all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads(line)["iteration"] for line in (resumed / "history.jsonl").read_text().splitlines()]
    assert history == list(range(30))
    assert len(list((resumed / "checkpoints").glob("ckpt_*.pt"))) <= 3  # run.keep


def _corrupt(run_dir: Path, tmp_path: Path) -> dict[str, Path]:
    source = latest_checkpoint(run_dir)
    files = {}
    truncated = tmp_path / "truncated" / "checkpoints" / "ckpt_00000006.pt"
    truncated.parent.mkdir(parents=True)
    truncated.write_bytes(source.read_bytes()[:2000])
    files["truncated"] = truncated
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint" * 50)
    files["garbage"] = garbage
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    files["foreign"] = foreign
    data = torch.load(source, weights_only=True)
    data["meta"]["w_rec"][0, 1] = float("nan")
    data.pop("digest", None)  # as if written without one: the NaN itself must be refused
    nan_dir = tmp_path / "nan"
    (nan_dir / "checkpoints").mkdir(parents=True)
    (nan_dir / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    torch.save(data, nan_dir / "checkpoints" / "ckpt_00000006.pt")
    files["nan"] = nan_dir
    (tmp_path / "empty").mkdir()
    files["empty"] = tmp_path / "empty"
    for name in ("truncated",):
        (tmp_path / name / "config.yaml").write_text((run_dir / "config.yaml").read_text())
    return files


BAD_TRAIN = [
    (["optim.lr=abc"], "optim.lr: Value 'abc'"),
    (["optim.lr=-1"], "optim.lr: must be > 0"),
    (["model.tau_m=0"], "model.tau_m: must be > 0"),
    (["model.n_rec=0"], "model.n_rec: must be >= 1"),
    (["error_module.signal_tau=-5"], "error_module.signal_tau: must be > 0"),
    (["foo=1"], "foo: Key 'foo' not in"),
    (["optim.lrr=1"], "optim.lrr: Key 'lrr' not in"),
    (["+foo.bar=2"], "foo: Key 'foo' not in"),
    (["experiment=nope"],
     r"experiment: unknown value 'nope' \(choose from cpu, cpu_hour, demo, gpu, natural_cpu, natural_paper, paper, "
     r"small, tiny\)$"),
    (["model=foo"], r"model: unknown value 'foo' \(choose from alif, cuba_lif, lif\)$"),
    (["model.cell=lstm"], "model.cell: unknown value 'lstm'"),
    (["error_module.kind=magic"], "error_module.kind: unknown value"),
    (["inner.rule=sgd"], "inner.rule: unknown value"),
    (["inner.plastic=[w_foo]"], "inner.plastic: unknown value 'w_foo'"),
    (["inner.n_updates=-1"], "inner.n_updates: must be >= 0"),
    (["run.device=tpu"], "run.device: must be cpu, cuda"),
    (["wandb.mode=sometimes"], "wandb.mode: unknown value"),
    (["task.n_steps=0"], "task.n_steps: must be >= 1"),
    (["task.family=evidence"], "task.family: unknown value"),
    (["model.n_adaptive=5"], "model.n_adaptive: needs cell=alif"),
    (["model.n_rec=1.5"], "model.n_rec: Value '1.5'"),
    (["run.progress=maybe"], "run.progress: Value 'maybe' is not a valid bool"),
    (["optim.lr=[1"], "overrides: "),
    (["error_module.use_context=false", "error_module.use_spikes=false", "error_module.use_inputs=false"],
     "error_module.use_context: the error module sees nothing"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_TRAIN, ids=[" ".join(o) for o, _ in BAD_TRAIN])
def test_bad_config_gives_one_line_and_exit_2_before_any_compute(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "never"
    assert main(["train", "experiment=tiny", f"run.dir={run_dir}", *QUIET, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eprop-l2l: "), err
    import re

    assert re.match(message, err[len("eprop-l2l: "):]), err
    assert not run_dir.exists()  # nothing written, nothing computed


def test_batch_not_divisible_by_the_number_of_processes(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "3")
    assert main(["train", "experiment=tiny", f"run.dir={tmp_path / 'x'}", *QUIET]) == 2
    assert capsys.readouterr().err == "eprop-l2l: optim.batch_size: must be divisible by the number of processes " \
                                      "(3), got 4\n"


def test_bad_checkpoints_and_run_directories(tiny_run, tmp_path, capsys):
    files = _corrupt(tiny_run, tmp_path)
    cases = [
        (["evaluate", str(tmp_path / "nowhere")], "nowhere: no such run directory or checkpoint"),
        (["evaluate", str(files["empty"])], "run directory without checkpoints"),
        (["evaluate", str(files["truncated"])], "unreadable \\(truncated or corrupted\\?\\)"),
        (["evaluate", str(files["garbage"])], "config.yaml: missing"),
        (["evaluate", str(files["nan"])], "w_rec holds NaN/Inf"),
        (["evaluate", str(tiny_run), "model.n_rec=30"], "incompatible with the configured model: w_in has shape"),
        (["evaluate", str(tiny_run), "optim.lr=oops"], "optim.lr: Value 'oops'"),
        (["train", "experiment=tiny", "model.n_rec=30", f"run.dir={tiny_run}", *QUIET],
         "run.dir: .* holds a run with another configuration \\(model.n_rec 20 → 30\\)"),
    ]
    foreign_run = tmp_path / "foreign_run" / "checkpoints"
    foreign_run.mkdir(parents=True)
    (foreign_run.parent / "config.yaml").write_text((tiny_run / "config.yaml").read_text())
    os.replace(files["foreign"], foreign_run / "ckpt_00000001.pt")
    cases.append((["evaluate", str(foreign_run.parent)], "not an eprop-l2l meta-training checkpoint"))
    import re

    for args, message in cases:
        code = main(args)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and err.startswith("eprop-l2l: "), (args, code, err)
        assert re.search(message, err), (args, err)


def test_bad_input_in_a_fresh_process_prints_no_traceback(tmp_path):
    result = subprocess.run(cli("train", "experiment=tiny", "model.tau_m=-1", f"run.dir={tmp_path}/x", *QUIET),
                            env=ENV, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr == "eprop-l2l: model.tau_m: must be > 0, got -1.0\n"
    assert "Traceback" not in result.stdout + result.stderr


def test_wandb_offline_run_holds_the_logged_keys(tmp_path):
    run_dir = tmp_path / "tracked"
    assert main(["train", "experiment=tiny", "optim.n_iterations=3", "eval.n_tasks=4", f"run.dir={run_dir}",
                 "wandb.mode=offline", "run.progress=false"]) == 0
    runs = list((run_dir / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    deadline = time.time() + 60  # wandb-core may still be flushing the file after finish() returns (seen under load)
    while (data := next(runs[0].glob("run-*.wandb")).read_bytes()).find(b"eval/mse_cart_after") < 0 \
            and time.time() < deadline:
        time.sleep(0.5)  # protobuf records: keys are stored verbatim
    for key in (b"loss", b"grad_norm", b"lr", b"train/mse_cart_before", b"train/mse_cart_after",
                b"train/rate_network_hz", b"train/rate_module_hz", b"val/mse_cart_after", b"iterations_per_second",
                b"eval/mse_cart_after", b"experiment", b"n_rec"):
        assert key in data, key
    assert list(runs[0].glob("files/media/images/eval/one_shot_*.png"))


def test_two_process_meta_gradient_equals_one_process(tmp_path):
    from eprop_l2l.runs import distributed
    from tests.workers.meta_gradient import meta_gradient

    out = tmp_path / "grads.pt"
    torchrun_workers("meta_gradient.py", str(out))
    two = torch.load(out, weights_only=True)
    assert two["world_size"] == 2
    one = meta_gradient(distributed.setup())
    for key, grad in one.items():
        scale = grad.abs().max()
        assert float((two["grads"][key] - grad).abs().max()) <= 1e-6 * float(scale), key
    # the guard: regularising each process's own mean rate (the naive split) gives another gradient
    assert float((two["local"]["w_rec"] - one["w_rec"]).abs().max()) > 1e-6 * float(one["w_rec"].abs().max())


def test_an_evaluation_states_the_training_compute(tiny_run, tmp_path):
    """From the training's metrics.json, or, for a run that predates that record, from the checkpoint's clock."""
    history = [json.loads(line) for line in (tiny_run / "history.jsonl").read_text().splitlines()]
    clock = sum(r["cpu_seconds"] for r in history) / 60
    saved = json.loads((tiny_run / "metrics.json").read_text())
    assert saved["cpu_minutes"] == pytest.approx(clock, rel=1e-9)
    assert main(["evaluate", str(tiny_run), "--out", str(tmp_path / "a"), "eval.figures=false"]) == 0
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["cpu_minutes"] == saved["cpu_minutes"]
    old = tmp_path / "old"  # a copy whose metrics.json has no cpu_minutes
    shutil.copytree(tiny_run, old, ignore=shutil.ignore_patterns("evaluations"))
    (old / "metrics.json").write_text(json.dumps({k: v for k, v in saved.items() if k != "cpu_minutes"}))
    assert main(["evaluate", str(old), "--out", str(tmp_path / "b"), "eval.figures=false"]) == 0
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["cpu_minutes"] == pytest.approx(clock, rel=1e-9)
