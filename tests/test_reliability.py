"""Reliability (issue #11): every bad input and every fault ends with an exit code and exactly one stderr line
naming the problem (and the way out) — no traceback, no hang, nothing written when refused, nothing lost.

The corpus is parametrized by kind: configuration values (used and unused sections, sizes, seeds, strings,
paths, overrides Hydra would ignore, sweeps), torchrun's environment, run-directory integrity (lock,
manifest, missing or changed files), checkpoints (bit flips, truncation, wrong types, wrong files), file
systems (read-only, full: a small tmpfs mounted for the test when this machine allows it — tests run as root
here, so chmod would not block writes — else simulated by OSError(EROFS/ENOSPC) from monkeypatched
os.open/os.mkdir/io.open, see ``small_fs`` and ``_simulate``), W&B without key or network, hanging peers and
faults in the middle of training. Most cases fail before
any computation; a few run in fresh processes to prove there is no traceback.
"""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eprop_l2l.cli import main
from eprop_l2l.runs import rundir
from eprop_l2l.runs.checkpoint import CheckpointError, content_digest, latest_checkpoint, load_checkpoint

ROOT = Path(__file__).resolve().parent.parent
QUIET = ("wandb.mode=disabled", "run.progress=false")
TINY = ("experiment=tiny", *QUIET)
FAST = ("optim.n_iterations=2", "run.checkpoint_every=1", "run.evaluate=false")
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eprop_l2l.cli", *args]


def one_line(capsys) -> str:
    """The single stderr line (without the ``eprop-l2l: `` prefix); fails on more lines or a traceback."""
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n") and err.startswith("eprop-l2l: "), err[-3000:]
    assert "Traceback" not in err and "\x1b" not in err and len(err) < 600, err
    return err[len("eprop-l2l: "):-1]


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (the lock file aside) with its bytes."""
    if not folder.exists():
        return {}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != rundir.LOCK}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny run (4 iterations; checkpoints 2, 3, 4 kept; evaluation without figure)."""
    run_dir = tmp_path_factory.mktemp("reliability") / "trained"
    assert main(["train", *TINY, "optim.n_iterations=4", "run.checkpoint_every=1", "eval.n_tasks=4",
                 "eval.figures=false", f"run.dir={run_dir}"]) == 0
    return run_dir


@pytest.fixture
def run_copy(trained, tmp_path) -> Path:
    target = tmp_path / "run"
    shutil.copytree(trained, target)
    return target


# ------------------------------------------------------------------------------ 1. configuration values

LONG = "9" * 100_000
CONFIG_CASES = [
    # values checked too late before
    (["optim.lr_decay=1000"], r"optim.lr_decay: must be in \(0, 1\]"),
    (["eval.seed=99999999999999999999999"], r"eval.seed: must be <= 2\*\*63-1"),
    (["optim.seed=-1"], r"optim.seed: must be >= 0"),
    (["optim.validation_seed=18446744073709551616"], r"optim.validation_seed: must be <= 2\*\*63-1"),
    # impossible values in sections the configuration does not use
    (["model.tau_a=-1"], r"model.tau_a: must be > 0"),
    (["model.beta=nan"], r"model.beta: must be a finite number"),
    (["error_module.kind=feedback", "error_module.n_rec=0"], r"error_module.n_rec: must be >= 1"),
    (["error_module.kind=feedback", "error_module.signal_tau=-1"], r"error_module.signal_tau: must be > 0"),
    (["error_module.kind=feedback", "error_module.tau_m=-3"], r"error_module.tau_m: must be > 0"),
    (["error_module.feedback=magic"], r"error_module.feedback: unknown value 'magic'"),
    (["error_module.cell=lstm", "error_module.v_th=0"], r"error_module.v_th: must be > 0"),
    (["error_module.kind=feedback", "error_module.projection_scale=0"], r"error_module.projection_scale: must be > 0"),
    # sizes bounded up front, and against this machine's memory
    (["model.n_rec=10000000"], r"model.n_rec: must be <= 100,000, got 10,000,000"),
    (["model.n_rec=60000"], r"model.n_rec: (training|evaluation) needs about .* of memory .* available; lower "
     r"model.n_rec"),
    (["optim.batch_size=1000000"], r"optim.batch_size: training needs about .*B of memory"),
    (["task.n_steps=1000000", "optim.batch_size=256"], r"task.n_steps: .* needs about .*B of memory"),
    (["eval.n_tasks=100000", "eval.batch_size=100000", "task.n_steps=1000"],
     r"eval.batch_size: evaluation needs about .*B of memory"),
    (["eval.n_tasks=100000000"], r"eval.n_tasks: must be <= 100,000"),
    (["task.n_pop_per_dim=1000000"], r"task.n_pop_per_dim: must be <= 100,000"),
    (["inner.n_updates=5000"], r"inner.n_updates: must be <= 1,000"),
    (["run.threads=100000"], r"run.threads: must be <= 1,024"),
    (["optim.n_iterations=-5"], r"optim.n_iterations: must be >= 0"),
    (["task.dt_ms=1e-300"], r"task.dt_ms: must be >= 0.001 \(1 µs\), got 1e-300"),
    (["run.keep=0"], r"run.keep: must be >= 1"),
    (["eval.batch_size=0"], r"eval.batch_size: must be >= 1"),
    # values accepted silently before
    (["inner.plastic=[w_in,w_in]"], r"inner.plastic: names a weight twice"),
    (["eval.reinit=[foo_]"], r"eval.reinit: 'foo_' matches no meta-parameter \(names: em_proj, "),
    (["wandb.project=a/b"], r"wandb.project: must not contain /"),
    (["wandb.tags=['']"], r"wandb.tags: must not be empty"),
    ([f"wandb.name={'n' * 200}"], r"wandb.name: at most 128 characters, got 200"),
    (["wandb.timeout_s=0"], r"wandb.timeout_s: must be > 0"),
    (["distributed.timeout_s=-1"], r"distributed.timeout_s: must be > 0"),
    (["distributed.backend=nccl"], r"distributed.backend: nccl needs GPUs"),
    (["run.device=cuda:abc"], r"run.device: must be cpu, cuda or cuda:N"),
    (["hydra.run.dir=/tmp/elsewhere"], r"hydra.run.dir: Hydra's own settings are not used by eprop-l2l"),
    (["hydra/launcher=basic"], r"hydra/launcher: a launcher runs the jobs of a multirun: add -m"),
    (["experiment=../model/alif"], r"experiment: unknown value '../model/alif'"),
    # paths and long or hostile values: cut and escaped
    ([f"run.dir=/tmp/{'x' * 300}"], r"run.dir: a name of 300 bytes in the path \(at most 255 per name\)"),
    (["run.dir=/tmp/a\x00b"], r"overrides: cannot parse 'run.dir=/tmp/a\\x00b' \(key=value; .*control characters "
     r"are not allowed\)$"),
    ([f"run.dir='/tmp/{'é/' * 1500}'"], r"run.dir: path of 4505 bytes \(at most 4000\)"),
    (["run.init_from=/nonexistent/run"], r"/nonexistent/run: no such run directory or checkpoint"),
    ([f"model.n_rec={LONG}"], r"model.n_rec: an override of 100,012 characters \(at most 4,000\): "
     r"'model.n_rec=9+…\[100014 chars\]…9+'$"),
    ([f"model.n_rec={'9' * 3000}"], r"model.n_rec: must be <= 100,000, got a number of 9966 bits$"),
    ([f"optim.lr={'9' * 3000}x"], r"optim.lr: Value '9+…\[3003 chars\]…9+x' of type 'str' could not be converted"),
    (["optim.lr=\x1b[31mred\x1b[0m"], r"overrides: cannot parse 'optim.lr=\\x1b\[31mred\\x1b\[0m'"),
    (["wandb.group=a\x07\x1b]0;title\x07"], r"overrides: cannot parse 'wandb.group=a\\x07\\x1b\]0;title\\x07'"),
    (["wandb.group='a\u202eb'"], r"wandb.group: contains control characters: 'a\\u202eb'"),
    # sweeps: bounded before anything is expanded or run
    (["-m", "optim.seed=range(0,100000)"], r"optim.seed: the sweep expands to more than 256 runs"),
    (["-m", "optim.seed=range(0,20)", "optim.validation_seed=range(0,20)"],
     r"optim.validation_seed: the sweep expands to more than 256 runs"),
    (["--cfg", "optim.lr_decay=1000"], r"optim.lr_decay: must be in \(0, 1\]"),
]


@pytest.mark.parametrize(("overrides", "message"), CONFIG_CASES,
                         ids=[" ".join(o)[:60].encode("unicode_escape").decode() for o, _ in CONFIG_CASES])
def test_bad_value_is_one_line_exit_2_and_nothing_written(overrides, message, tmp_path, capsys):
    run_dir = tmp_path / "never"
    options = [o for o in overrides if o.startswith("-")]
    values = [o for o in overrides if not o.startswith("-")]
    if not any(v.startswith("run.dir=") for v in values):
        values.append(f"run.dir={run_dir}")
    started = time.monotonic()
    assert main(["train", *options, *TINY, *values]) == 2
    line = one_line(capsys)
    assert re.search(message, line), line
    assert not run_dir.exists() and list(tmp_path.iterdir()) == []  # nothing written
    assert time.monotonic() - started < 30  # refused before any computation


def test_a_refused_size_leaves_nothing_behind_so_the_corrected_command_runs(tmp_path, capsys):
    run_dir = tmp_path / "run"
    assert main(["train", *TINY, *FAST, "model.n_rec=10000000", f"run.dir={run_dir}"]) == 2
    assert "model.n_rec" in one_line(capsys) and not run_dir.exists()
    assert main(["train", *TINY, *FAST, f"run.dir={run_dir}"]) == 0


def test_evaluation_overrides_are_bounded_too(trained, capsys):
    before = snapshot(trained)
    assert main(["evaluate", str(trained), "eval.n_tasks=100000000"]) == 2
    assert re.search(r"eval.n_tasks: must be <= 100,000", one_line(capsys))
    assert main(["evaluate", str(trained), "eval.seed=99999999999999999999999"]) == 2
    assert re.search(r"eval.seed: must be <= 2\*\*63-1", one_line(capsys))
    assert snapshot(trained) == before


# ---------------------------------------------------------------------------- 2. torchrun's environment

ENV_CASES = [
    ({"WORLD_SIZE": "0"}, r"WORLD_SIZE: must be in \[1, 65536\], got 0"),
    ({"WORLD_SIZE": "abc"}, r"WORLD_SIZE: must be a whole number, got 'abc'; launch with torchrun"),
    ({"WORLD_SIZE": "2"}, r"RANK: not set, but WORLD_SIZE=2 asks for several processes"),
    ({"WORLD_SIZE": "2", "RANK": "5"}, r"RANK: must be in \[0, 1\], got 5"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "99999"},
     r"MASTER_PORT: must be in \[1, 65535\]"),
    ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "29500"}, r"MASTER_ADDR: not set"),
    ({"WORLD_SIZE": "3", "RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     r"optim.batch_size: must be divisible by the number of processes \(3\), got 4"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "x", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"},
     r"LOCAL_RANK: must be a whole number, got 'x'"),
]


@pytest.mark.parametrize(("env", "message"), ENV_CASES, ids=[str(e) for e, _ in ENV_CASES])
def test_bad_torchrun_environment_is_one_line(env, message, tmp_path, capsys, monkeypatch):
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert main(["train", *TINY, f"run.dir={tmp_path / 'never'}"]) == 2
    assert re.search(message, one_line(capsys))
    assert not (tmp_path / "never").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("rank", ["0", "1"])
def test_a_missing_peer_ends_in_one_line_within_the_timeout(rank, tmp_path):
    """WORLD_SIZE=2 with one process: rank 0 waits for a client, rank 1 for the server — both bounded by
    distributed.timeout_s (3 s here), one line, no native stack trace. A fresh process: no Python traceback."""
    env = {**ENV, "WORLD_SIZE": "2", "RANK": rank, "LOCAL_RANK": rank, "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(_free_port())}
    run_dir = tmp_path / "run"
    started = time.monotonic()
    result = subprocess.run(cli("train", *TINY, *FAST, "distributed.timeout_s=3", f"run.dir={run_dir}"), env=env,
                            capture_output=True, text=True, timeout=240)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert re.fullmatch(r"eprop-l2l: distributed: the 2 processes did not all join within distributed.timeout_s=3 s "
                        r"\(.*\); start all 2 processes \(torchrun --nproc_per_node 2\) or raise "
                        r"distributed.timeout_s\n", result.stderr), result.stderr[-2000:]
    assert elapsed < 200  # interpreter start-up on a loaded machine + 3 s (+ torch's one retry)
    if rank == "0":  # nothing durable was written: the corrected command (one process) takes the directory over
        assert rundir.inspect(run_dir).state == "started"
        assert main(["train", *TINY, *FAST, f"run.dir={run_dir}"]) == 0
    else:
        assert not run_dir.exists()  # only rank 0 writes


# ------------------------------------------------------------------------ 3. run-directory integrity


def _train_again(run_dir: Path, *extra: str) -> int:
    return main(["train", *TINY, "optim.n_iterations=4", "run.checkpoint_every=1", "eval.n_tasks=4",
                 "eval.figures=false", f"run.dir={run_dir}", *extra])


def _flip(path: Path, position: int, bit: int = 0) -> None:
    data = bytearray(path.read_bytes())
    data[position] ^= 1 << bit
    path.write_bytes(bytes(data))


def _remove_config(run: Path) -> None:
    (run / "config.yaml").unlink()


def _remove_config_legacy(run: Path) -> None:
    (run / "config.yaml").unlink()
    (run / "manifest.json").unlink()


def _remove_checkpoints(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")


def _remove_checkpoints_and_manifest(run: Path) -> None:
    shutil.rmtree(run / "checkpoints")
    (run / "manifest.json").unlink()


def _remove_latest(run: Path) -> None:
    latest_checkpoint(run).unlink()


def _edit_config(run: Path) -> None:
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text.replace("n_rec: 20", "n_rec: 21"))


def _garbage_config_legacy(run: Path) -> None:
    (run / "manifest.json").unlink()
    (run / "config.yaml").write_text("model: [unclosed\n  x: :\n")


def _list_config_legacy(run: Path) -> None:
    (run / "manifest.json").unlink()
    (run / "config.yaml").write_text("- a\n- b\n")


def _garbage_manifest(run: Path) -> None:
    (run / "manifest.json").write_text("{not json")


def _foreign_manifest(run: Path) -> None:
    (run / "manifest.json").write_text(json.dumps({"format": 99, "checkpoints": []}))


def _escaping_manifest(run: Path) -> None:
    data = json.loads((run / "manifest.json").read_text())
    data["checkpoints"][-1]["file"] = "../../../etc/passwd"
    (run / "manifest.json").write_text(json.dumps(data))


def _flip_latest(run: Path) -> None:
    path = latest_checkpoint(run)
    _flip(path, path.stat().st_size // 2)


def _truncate_latest(run: Path) -> None:
    path = latest_checkpoint(run)
    path.write_bytes(path.read_bytes()[:1000])


def _replace_latest_by_text(run: Path) -> None:
    latest_checkpoint(run).write_text("just text\n")


def _history_without_anything(run: Path) -> None:
    for name in ("checkpoints", "manifest.json", "config.yaml"):
        path = run / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()


DIRECTORY_CASES = [
    ("config.yaml missing", _remove_config, (), r"config.yaml is missing, so the run's record is incomplete \(3 "
     r"checkpoints recorded\); restore it or choose another run.dir"),
    ("config.yaml missing, other model and optimiser", _remove_config, ("model.n_rec=30", "optim.lr=0.1"),
     r"config.yaml is missing"),
    ("config.yaml missing, no manifest", _remove_config_legacy, (), r"config.yaml is missing but 3 checkpoints are "
     r"present"),
    ("checkpoints lost", _remove_checkpoints, (), r"checkpoints/ckpt_00000004.pt is recorded in manifest.json but "
     r"missing \(3 of 3 recorded checkpoints lost\); restore it or choose another run.dir"),
    ("checkpoints and manifest lost", _remove_checkpoints_and_manifest, (), r"history.jsonl present but no "
     r"checkpoints \(checkpoints/ lost\?\): continuing would replace the run's history and results; restore "
     r"checkpoints/ or choose another run.dir"),
    ("latest checkpoint deleted", _remove_latest, (), r"ckpt_00000004.pt is recorded in manifest.json but missing"),
    ("history and metrics only", _history_without_anything, (), r"history.jsonl present but no checkpoints"),
    ("config.yaml edited", _edit_config, (), r"config.yaml differs from the one recorded in manifest.json \(edited "
     r"or corrupted\); restore it, or train into another run.dir"),
    ("config.yaml unparsable, no manifest", _garbage_config_legacy, (), r"config.yaml: unreadable \('while parsing a "
     r"flow sequence'\); restore it"),
    ("config.yaml a list, no manifest", _list_config_legacy, (), r"config.yaml: not a configuration"),
    ("manifest garbage", _garbage_manifest, (), r"manifest.json' is unreadable .*; delete .* to re-record"),
    ("manifest of another format", _foreign_manifest, (), r"is not an eprop-l2l manifest \(format 1\)"),
    ("manifest pointing outside", _escaping_manifest, (), r"lists '../../../etc/passwd', not a checkpoint of this"),
    ("latest checkpoint bit-flipped", _flip_latest, (), r"checkpoint '.*ckpt_00000004.pt': SHA-256 differs from the "
     r"one recorded in manifest.json when it was written \(corrupted or modified\); restore it, or delete it"),
    ("latest checkpoint truncated", _truncate_latest, (), r"ckpt_00000004.pt': SHA-256 differs"),
    ("latest checkpoint replaced by text", _replace_latest_by_text, (), r"ckpt_00000004.pt': SHA-256 differs"),
    ("another configuration", lambda run: None, ("model.n_rec=30",),
     r"run.dir: .* holds a run with another configuration \(model.n_rec 20 → 30\); choose another run.dir"),
]


@pytest.mark.parametrize(("damage", "extra", "message"), [c[1:] for c in DIRECTORY_CASES],
                         ids=[c[0] for c in DIRECTORY_CASES])
def test_incomplete_or_inconsistent_run_directory_is_refused_and_kept(damage, extra, message, run_copy, capsys):
    damage(run_copy)
    before = snapshot(run_copy)
    assert _train_again(run_copy, *extra) == 2
    assert re.search(message, one_line(capsys))
    assert snapshot(run_copy) == before  # never a silent restart over the record


EVALUATE_CASES = [
    ("latest checkpoint bit-flipped", _flip_latest, r"ckpt_00000004.pt': SHA-256 differs from the one recorded"),
    ("latest checkpoint truncated", _truncate_latest, r"ckpt_00000004.pt': SHA-256 differs"),
    ("checkpoints lost", _remove_checkpoints, r"checkpoint '.*ckpt_00000004.pt': no such file"),
    ("manifest garbage", _garbage_manifest, r"manifest.json' is unreadable"),
]


@pytest.mark.parametrize(("damage", "message"), [c[1:] for c in EVALUATE_CASES], ids=[c[0] for c in EVALUATE_CASES])
def test_evaluate_refuses_a_damaged_record(damage, message, run_copy, capsys):
    damage(run_copy)
    before = snapshot(run_copy)
    assert main(["evaluate", str(run_copy)]) == 2
    assert re.search(message, one_line(capsys))
    assert snapshot(run_copy) == before


def test_run_dir_that_is_a_file_or_foreign_or_under_a_file(tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me too")
    for run_dir, message, code in [
            (afile, r"run.dir: '.*afile' is a file, not a directory; choose another run.dir", 2),
            (foreign, r"non-empty directory that holds no eprop-l2l run \(1 entries, e.g. 'notes.txt'\); choose a "
                      r"new or empty run.dir", 2),
            (afile / "sub", r"run.dir: cannot create the run directory: .*afile/sub': a part of the path is a file, "
                            r"not a directory: choose another path \(ENOTDIR\)", 2)]:
        assert main(["train", *TINY, *FAST, f"run.dir={run_dir}"]) == code
        assert re.search(message, one_line(capsys))
    assert afile.read_text() == "keep me" and [p.name for p in foreign.iterdir()] == ["notes.txt"]


def test_two_trainings_on_one_run_directory(tmp_path, capsys):
    """The second writer is refused at once (exit 2, naming the holder's pid); the first one's history stays
    one consecutive sequence."""
    run_dir = tmp_path / "run"
    args = cli("train", *TINY, "optim.n_iterations=100000", "run.checkpoint_every=3", "run.evaluate=false",
               f"run.dir={run_dir}")
    first = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 180
        while not ((run_dir / "history.jsonl").exists() and (run_dir / "history.jsonl").read_text().count("\n") >= 2):
            assert first.poll() is None and time.time() < deadline, first.communicate()
            time.sleep(0.1)
        assert main(["train", *TINY, "optim.n_iterations=100000", "run.evaluate=false", f"run.dir={run_dir}"]) == 2
        line = one_line(capsys)
        assert re.fullmatch(rf"run.dir: '.*run' is in use by process {first.pid} \(an eprop-l2l train writing it\); "
                            r"wait for it to finish, stop it, or choose another run.dir", line), line
        result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=180)  # and from a shell
        assert result.returncode == 2 and f"in use by process {first.pid}" in result.stderr
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=180)
    history = [json.loads(line)["iteration"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history == list(range(len(history)))  # one writer, one sequence
    assert rundir.inspect(run_dir).state == "resume"


def test_a_run_being_written_is_refused_as_in_use_before_its_record_is_read(run_copy, capsys):
    """Mid-rotation (the writer has just removed its oldest checkpoint, the manifest still lists it) a second
    train read the record first and blamed a lost checkpoint (seen on a loaded machine); the lock is checked
    first, and nothing is written."""
    oldest = sorted((run_copy / "checkpoints").glob("ckpt_*.pt"))[0]
    oldest.unlink()  # what a writer's rotation looks like from outside, for a moment
    before = sorted(p.name for p in run_copy.rglob("*"))
    with rundir.RunLock.acquire(run_copy):  # the writer (this process, through its own open file)
        assert _train_again(run_copy, "optim.n_iterations=6") == 2
    line = one_line(capsys)
    assert " is in use by process " in line and "missing" not in line, line
    assert sorted(p.name for p in run_copy.rglob("*")) == before


def test_kill_between_rename_and_manifest_and_orphans_are_harmless(run_copy):
    """A checkpoint renamed into place but never listed (kill -9 between the two steps) is ignored; temporary
    files of killed writers are removed; the run resumes from its latest listed checkpoint."""
    stray = run_copy / "checkpoints" / "ckpt_00000005.pt"
    shutil.copy(latest_checkpoint(run_copy), stray)  # iteration 4's contents under iteration 5's name, unlisted
    (run_copy / "checkpoints" / ".tmp_dead.pt").write_bytes(b"half a checkpoint")
    (run_copy / ".tmp_dead").write_text("half a config")
    assert latest_checkpoint(run_copy).name == "ckpt_00000004.pt"
    assert _train_again(run_copy, "optim.n_iterations=6") == 0
    names = sorted(p.name for p in (run_copy / "checkpoints").iterdir())
    assert names == ["ckpt_00000004.pt", "ckpt_00000005.pt", "ckpt_00000006.pt"]
    assert load_checkpoint(stray)["iteration"] == 5  # rewritten by the resumed run, then listed
    assert not list(run_copy.rglob(".tmp_*"))
    history = [json.loads(line)["iteration"] for line in (run_copy / "history.jsonl").read_text().splitlines()]
    assert history == list(range(6))


def test_a_run_directory_of_an_earlier_version_is_adopted(run_copy, capsys):
    (run_copy / "manifest.json").unlink()
    assert _train_again(run_copy, "optim.n_iterations=5") == 0
    assert "3 checkpoints recorded in manifest.json as they are" in capsys.readouterr().out
    assert [p.name for p in latest_checkpoint(run_copy).parent.glob("ckpt_*.pt")]
    assert rundir.inspect(run_copy).state == "resume"


# ---------------------------------------------------------------------------------------- 4. checkpoints


def test_every_single_bit_flip_of_a_recorded_checkpoint_is_refused(run_copy, capsys):
    """100 single-bit flips spread over the file: each is refused in one line naming the file (manifest
    checksum), by evaluate; none evaluates with changed weights."""
    path = latest_checkpoint(run_copy)
    original = path.read_bytes()
    size = len(original)
    for k in range(100):
        position = (k * (size - 1)) // 99
        _flip(path, position, k % 8)
        assert main(["evaluate", str(run_copy), "eval.n_tasks=1", "eval.figures=false"]) == 2, position
        assert re.search(r"ckpt_00000004.pt': SHA-256 differs", one_line(capsys)), position
        path.write_bytes(original)


def test_a_copied_out_checkpoint_is_protected_by_its_own_digest(run_copy, tmp_path):
    """Outside its run (no manifest), flips are caught by the embedded content digest, by the unpickler or
    by the field checks: a flip never yields changed meta-parameters."""
    source = latest_checkpoint(run_copy)
    reference = load_checkpoint(source)
    original = source.read_bytes()
    alone = tmp_path / "alone.pt"
    refused = 0
    for k in range(100):
        data = bytearray(original)
        data[(k * (len(data) - 1)) // 99] ^= 1 << (k % 8)
        alone.write_bytes(bytes(data))
        try:
            data = load_checkpoint(alone)
        except CheckpointError as err:
            refused += 1
            assert "\n" not in str(err)
            continue
        assert content_digest(data) == reference["digest"]  # every field as written
        meta = data["meta"]
        assert meta.keys() == reference["meta"].keys()
        assert all(torch.equal(meta[k], reference["meta"][k]) for k in meta)
    assert refused >= 70  # measured 79: the rest hit bytes torch.load does not use (zip header copies, padding)


def _standalone(tmp_path: Path, run: Path, change) -> Path:
    data = torch.load(latest_checkpoint(run), weights_only=True)
    change(data)
    data.pop("digest", None)
    run_dir = tmp_path / "bad"
    (run_dir / "checkpoints").mkdir(parents=True)
    shutil.copy(run / "config.yaml", run_dir / "config.yaml")
    torch.save(data, run_dir / "checkpoints" / "ckpt_00000004.pt")
    return run_dir


CHECKPOINT_CASES = [
    ("iteration as text", lambda d: d.update(iteration="four"), r"field 'iteration' is not a whole number >= 0 "
     r"\(got str\)"),
    ("meta as a list", lambda d: d.update(meta=[1, 2]), r"field 'meta' is not a non-empty mapping of names to "
     r"floating-point tensors"),
    ("meta values as numbers", lambda d: d["meta"].update(w_rec=3.0), r"field 'meta' is not"),
    ("optimizer without state", lambda d: d.update(optimizer={}), r"field 'optimizer' is not an optimizer state"),
    ("generator as floats", lambda d: d.update(generator=torch.zeros(3)), r"field 'generator' is not a generator "
     r"state"),
    ("history as a dict", lambda d: d.update(history={}), r"field 'history' is not a list of records"),
    ("format 2", lambda d: d.update(format=2), r"format 2 \(this version reads 1\)"),
    ("a field missing", lambda d: d.pop("scheduler"), r"not an eprop-l2l meta-training checkpoint"),
    ("negative skipped", lambda d: d.update(skipped=-1), r"field 'skipped' is not a whole number >= 0"),
]


@pytest.mark.parametrize(("change", "message"), [c[1:] for c in CHECKPOINT_CASES], ids=[c[0] for c in CHECKPOINT_CASES])
def test_checkpoint_fields_of_the_wrong_type(change, message, trained, tmp_path, capsys):
    run_dir = _standalone(tmp_path, trained, change)
    assert main(["evaluate", str(run_dir)]) == 2
    assert re.search(message, one_line(capsys))


def test_wrong_files_given_as_checkpoints(trained, tmp_path, capsys):
    shutil.copy(trained / "config.yaml", tmp_path / "config.yaml")
    text = tmp_path / "notes.txt"
    text.write_text("a\nb\n")
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    digest = _standalone(tmp_path, trained, lambda d: None)
    data = torch.load(latest_checkpoint(trained), weights_only=True)
    data["meta"]["w_rec"] += 1e-3  # weights changed, digest kept
    torch.save(data, digest / "checkpoints" / "ckpt_00000004.pt")
    cases = [
        ([str(trained / "config.yaml")], r"checkpoint '.*config.yaml': unreadable \(truncated or corrupted\?\)"),
        ([str(text)], r"unreadable \(truncated or corrupted\?\)"),
        ([str(empty)], r"unreadable \(truncated or corrupted\?\)"),
        ([str(digest)], r"contents differ from their recorded digest \(corrupted or modified\)"),
        ([str(trained / "checkpoints" / "ckpt_00000099.pt")], r"no such run directory or checkpoint"),
    ]
    for args, message in cases:
        assert main(["evaluate", *args]) == 2, args
        assert re.search(message, one_line(capsys)), args


# ---------------------------------------------------------------------------------------- 5. file systems


@contextlib.contextmanager
def small_fs(path: Path, size: str):
    """A tmpfs of ``size`` mounted at ``path`` (root with CAP_SYS_ADMIN), yielding a function that remounts it
    read-only; None when mounting is not possible here."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True).returncode == 0 if shutil.which("mount") else False
    if not mounted:
        yield None
        return
    try:
        yield lambda: subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True, capture_output=True)
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def _simulate(monkeypatch, root: Path, code: int) -> None:
    """Fallback without mount: every write under ``root`` fails with ``code`` (os.open, os.mkdir, io.open)."""
    def blocked(path) -> bool:
        with contextlib.suppress(TypeError, ValueError):
            return str(Path(os.fsdecode(path)).resolve()).startswith(str(root.resolve()))
        return False

    real_open, real_mkdir, real_builtin_open = os.open, os.mkdir, builtins.open

    def fake_open(path, flags, *args, **kwargs):
        if blocked(path) and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT):
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    def fake_mkdir(path, *args, **kwargs):
        if blocked(path) and not Path(path).exists():
            raise OSError(code, os.strerror(code), os.fsdecode(path))
        return real_mkdir(path, *args, **kwargs)

    def fake_builtin_open(file, mode="r", *args, **kwargs):
        if isinstance(file, str | bytes | os.PathLike) and blocked(file) and set(mode) & set("wax+"):
            raise OSError(code, os.strerror(code), os.fsdecode(file))
        return real_builtin_open(file, mode, *args, **kwargs)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)
    monkeypatch.setattr(builtins, "open", fake_builtin_open)
    import io
    monkeypatch.setattr(io, "open", fake_builtin_open)


def test_read_only_file_system(trained, tmp_path, capsys, monkeypatch):
    """A new run and a resume on a read-only file system: exit 2, one line naming it, nothing changed."""
    mount = tmp_path / "ro"
    with small_fs(mount, "4m") as read_only:
        shutil.copytree(trained, mount / "run")
        if read_only is not None:
            read_only()
        else:
            _simulate(monkeypatch, mount, errno.EROFS)
        before = snapshot(mount)
        assert _train_again(mount / "run", "optim.n_iterations=6") == 2
        assert re.search(r"run.dir: cannot create the run directory: .*'.*run/.lock': read-only file system: choose a "
                         r"writable run.dir \(EROFS\)", one_line(capsys))
        assert main(["train", *TINY, *FAST, f"run.dir={mount / 'new'}"]) == 2
        assert re.search(r"run.dir: cannot create the run directory: '.*new': read-only file system", one_line(capsys))
        assert snapshot(mount) == before


def test_full_file_system_before_and_during_training(tmp_path, capsys, monkeypatch):
    """Disk full while starting (config.yaml), resuming, and in the middle of training (a checkpoint): one line
    each, no temporary file left behind, the recorded checkpoints intact and verifiable."""
    mount = tmp_path / "small"
    with small_fs(mount, "96k") as mounted:
        if mounted is None:
            pytest.skip("no tmpfs here (mount needs root); the ENOSPC paths are covered by test_enospc_simulated")
        run_dir = mount / "run"
        code = main(["train", *TINY, "optim.n_iterations=40", "run.checkpoint_every=1", "run.keep=3",
                     "run.evaluate=false", f"run.dir={run_dir}"])
        assert code == 1
        line = one_line(capsys)
        assert re.search(r"training: (.*: )?no space left on the file system: free space or choose a run.dir on "
                         r"another file system \(ENOSPC\); the checkpoints up to iteration \d+ are intact: rerun the "
                         r"same command to resume", line), line
        assert not list(run_dir.rglob(".tmp_*"))
        record = rundir.inspect(run_dir)
        assert record.state == "resume"
        for path in record.checkpoints:
            load_checkpoint(path)  # checksums verified
        before = snapshot(run_dir)
        filler = mount / "filler"
        with contextlib.suppress(OSError):
            with open(filler, "wb") as handle:
                while True:
                    handle.write(b"\0" * 4096)
                    handle.flush()
        code = main(["train", *TINY, "optim.n_iterations=40", "run.checkpoint_every=1", "run.keep=3",
                     "run.evaluate=false", f"run.dir={run_dir}"])
        assert code in (1, 2)
        assert re.search(r"no space left on the file system", one_line(capsys))
        assert not list(run_dir.rglob(".tmp_*"))  # disk full on resume leaves no orphan
        after = snapshot(run_dir)
        for name in ("config.yaml", "manifest.json", *[str(p.relative_to(run_dir)) for p in record.checkpoints]):
            assert after[name] == before[name], name


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EIO])
def test_enospc_simulated(code, tmp_path, capsys, monkeypatch):
    """The same without a mount: the file system refuses every write under the run directory."""
    _simulate(monkeypatch, tmp_path / "run", code)
    assert main(["train", *TINY, *FAST, f"run.dir={tmp_path / 'run'}"]) == 2
    line = one_line(capsys)
    assert line.startswith("run.dir: cannot create the run directory: ") and f"({errno.errorcode[code]})" in line
    assert not (tmp_path / "run").exists()


FAULTS = {
    "allocator": (lambda: RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 TB"),
                  r"training: out of memory on cpu; lower optim.batch_size, model.n_rec or task.n_steps \(the "
                  r"checkpoints up to iteration 3 are intact: rerun the same command to resume\)"),
    "MemoryError": (MemoryError, r"training: out of memory on cpu"),
    "OutOfMemoryError": (lambda: torch.OutOfMemoryError("CUDA out of memory"), r"training: out of memory"),
    "EIO": (lambda: OSError(errno.EIO, "Input/output error", "/x/history.jsonl"),
            r"training: '/x/history.jsonl': input/output error: the disk or file system failed; check it, or choose "
            r"another run.dir \(EIO\); the checkpoints up to iteration 3 are intact"),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_a_fault_in_the_middle_of_training_keeps_the_record(fault, tmp_path, capsys, monkeypatch):
    """A fault at the 4th meta-iteration (simulated: out of memory, an I/O error): exit 1, one line naming what
    was kept; the recorded checkpoints verify and the same command resumes from them."""
    from eprop_l2l.meta.learner import MetaLearner

    make, message = FAULTS[fault]
    calls, forward = [0], MetaLearner.forward

    def failing(self, meta, batch):
        calls[0] += 1
        if calls[0] == 5:  # 3 iterations and the first validation done
            raise make()
        return forward(self, meta, batch)

    monkeypatch.setattr(MetaLearner, "forward", failing)
    run_dir = tmp_path / "run"
    args = ["train", *TINY, "optim.n_iterations=5", "run.checkpoint_every=1", "run.evaluate=false",
            f"run.dir={run_dir}"]
    assert main(args) == 1
    assert re.search(message, one_line(capsys))
    record = rundir.inspect(run_dir)
    assert record.state == "resume" and [load_checkpoint(p)["iteration"] for p in record.checkpoints] == [1, 2, 3]
    monkeypatch.setattr(MetaLearner, "forward", forward)
    assert main(args) == 0
    history = [json.loads(line)["iteration"] for line in (run_dir / "history.jsonl").read_text().splitlines()]
    assert history == list(range(5))


# -------------------------------------------------------------------------------------------------- 6. W&B


@pytest.mark.parametrize("case", ["no key", "no network"])
def test_wandb_online_without_key_or_network_falls_back_to_offline(case, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("HOME", str(tmp_path))
    if case == "no network":
        monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
        monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    run_dir = tmp_path / "run"
    started = time.monotonic()
    assert main(["train", "experiment=tiny", "run.progress=false", *FAST, "wandb.mode=online", "wandb.timeout_s=5",
                 f"run.dir={run_dir}"]) == 0
    line = one_line(capsys)
    reason = "no W&B API key" if case == "no key" else "cannot reach 127.0.0.1"
    assert line.startswith(f"warning: wandb.mode=online: {reason}") and "logging this run offline" in line, line
    assert time.monotonic() - started < 120
    assert list((run_dir / "wandb").glob("offline-run-*"))


# --------------------------------------------------------------------------------- 7. fresh processes


def test_fresh_processes_print_one_line_and_no_traceback(trained, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained, run)
    _flip_latest(run)
    cases = [
        (cli("evaluate", str(run)), 2, r"SHA-256 differs"),
        (cli("train", *TINY, "optim.lr=\x1b[2J\x1b[31mboom", f"run.dir={tmp_path / 'x'}"), 2,
         r"overrides: cannot parse 'optim.lr=\\x1b\[2J\\x1b\[31mboom'"),
        (cli("train", *TINY, f"run.dir={tmp_path}/{'y' * 300}"), 2, r"a name of 300 bytes"),
    ]
    for args, code, message in cases:
        result = subprocess.run(args, env=ENV, capture_output=True, text=True, timeout=240)
        assert result.returncode == code, result.stderr[-2000:]
        assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr + result.stdout
        assert "\x1b" not in result.stderr and re.search(message, result.stderr), result.stderr
