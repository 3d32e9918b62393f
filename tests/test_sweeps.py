"""Multiruns through Hydra's launcher plugins (`basic`, `joblib`, `submitit_local`), their index and W&B group,
re-running a sweep that was killed or had a failed job, refusals before any job starts, and multi-node torchrun:
2 "nodes" x 1 process through c10d rendezvous on the path of a SLURM job (scripts/slurm/ddp.sbatch → srun →
scripts/launch_distributed.sh → torchrun), against one process; errors that every process of a torchrun launch
meets printed once."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from eprop_l2l.cli import main
from eprop_l2l.errors import ConfigError
from eprop_l2l.runs.checkpoint import latest_checkpoint
from eprop_l2l.runs.distributed import LostPeer
from eprop_l2l.runs.rundir import RunFault, RunLock
from eprop_l2l.runs.sweep import job_directory

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1",
       "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
TINY = ("experiment=tiny", "run.evaluate=false", "run.progress=false", "wandb.mode=disabled")
# the only values two runs of one configuration may differ in: clock readings, and a checkpoint's digest of its
# own contents (which include them)
TIMING = ("seconds", "cpu_seconds", "digest")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "eprop_l2l.cli", *args]


def index_of(base: Path) -> dict:
    return json.loads((base / "index.json").read_text())


def history(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]


def untimed(value):
    """A checkpoint's or history record's content without its clock readings."""
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMING}
    if isinstance(value, list | tuple):
        return [untimed(v) for v in value]
    return value


def assert_same(a, b, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(a) == sorted(b), where
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where  # bit for bit
    else:
        assert a == b, where


def assert_same_run(ours: Path, reference: Path) -> None:
    """Every file of the two run directories: config.yaml byte for byte; the checkpoints (meta-parameters,
    optimiser and generator states, history) and history.jsonl equal bit for bit but for the clock readings."""
    files = sorted(str(p.relative_to(ours)) for p in ours.rglob("*") if p.is_file() and p.name != ".lock")
    assert files == sorted(str(p.relative_to(reference)) for p in reference.rglob("*")
                           if p.is_file() and p.name != ".lock")
    assert (ours / "config.yaml").read_bytes() == (reference / "config.yaml").read_bytes()
    assert untimed(history(ours)) == untimed(history(reference))
    for name in files:
        if name.endswith(".pt"):
            assert_same(untimed(torch.load(ours / name, weights_only=True)),
                        untimed(torch.load(reference / name, weights_only=True)), name)


def wandb_run_group(run_dir: Path) -> str:
    """The group in the run record of an offline W&B run (its ``run-*.wandb`` file: W&B's 7-byte header, then
    LevelDB-log records of protobuf ``Record``s, in 32 KiB blocks)."""
    from wandb.proto import wandb_internal_pb2

    (path,) = run_dir.glob("wandb/offline-run-*/run-*.wandb")
    deadline = time.time() + 60  # wandb-core may still be writing after finish() returns (seen under load)
    while True:
        data, pos, records, part = path.read_bytes(), 7, [], b""
        while pos + 7 <= len(data):
            if 32768 - pos % 32768 < 7:
                pos += 32768 - pos % 32768
                continue
            _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
            chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
            if kind == 0:
                break
            part = chunk if kind in (1, 2) else part + chunk
            if kind in (1, 4):
                records.append(part)
        for raw in records:
            record = wandb_internal_pb2.Record()
            record.ParseFromString(raw)
            if record.WhichOneof("record_type") == "run":
                return record.run.run_group
        assert time.time() < deadline, f"no run record in {path}"
        time.sleep(0.5)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------------------- launchers


def test_joblib_runs_two_jobs_at_a_time_into_the_run_directories_plain_runs_write(tmp_path):
    base = tmp_path / "seeds"
    common = [*TINY, "optim.n_iterations=3", "run.checkpoint_every=2", f"run.dir={base}"]
    # the reference: each job trained on its own, one after the other (as `train` without -m), into the same paths
    for seed in range(4):
        job = [*common, f"optim.seed={seed}"]
        assert main(["train", *job[:-2], job[-1], f"run.dir='{job_directory(base, seed, job)}'",
                     "wandb.group=seeds"]) == 0
    reference = tmp_path / "reference"
    base.rename(reference)
    assert main(["train", "-m", *common, "optim.seed=range(4)", "hydra/launcher=joblib",
                 "hydra.launcher.n_jobs=2"]) == 0
    index = index_of(base)
    assert index["launcher"] == "joblib" and index["differ"] == ["optim.seed"] and index["wandb_group"] == "seeds"
    jobs = index["jobs"]
    assert [(j["status"], j["exit"], j["error"], j["iteration"], j["differences"]) for j in jobs] == \
        [("done", 0, None, 3, {"optim.seed": s}) for s in range(4)]
    assert sorted(p.name for p in reference.iterdir() if p.is_dir()) == [j["run_dir"] for j in jobs]
    for job in jobs:
        assert_same_run(base / job["run_dir"], reference / job["run_dir"])
    # two at a time: at every job's start at most one other runs, and some job starts while another runs
    spans = [(j["started"], j["ended"]) for j in jobs]
    running = [sum(s <= start < e for s, e in spans) for start, _ in spans]
    assert max(running) == 2, spans
    wall = max(e for _, e in spans) - min(s for s, _ in spans)
    assert wall < sum(j["seconds"] for j in jobs), spans


def test_submitit_local_sweep_writes_its_index(tmp_path, monkeypatch, capsys):
    base = tmp_path / "local"
    monkeypatch.setenv("PYTHONPATH", str(ROOT))  # submitit starts each job as `python -m submitit.core._submit`
    assert main(["train", "-m", *TINY, "optim.n_iterations=1", "optim.seed=range(2)", f"run.dir={base}",
                 "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]) == 0
    index = index_of(base)
    assert index["launcher"] == "submitit_local" and index["differ"] == ["optim.seed"]
    assert [(j["status"], j["exit"], j["iteration"]) for j in index["jobs"]] == [("done", 0, 1), ("done", 0, 1)]
    for job in index["jobs"]:
        assert latest_checkpoint(base / job["run_dir"]).name == "ckpt_00000001.pt"
    logs = sorted(base.glob(".submitit/*/*_0_log.out"))  # the jobs ran as submitit jobs, each with its own log
    assert len(logs) == 2 and all("trained 1 meta-iterations" in log.read_text() for log in logs)
    assert "multirun: 2 done" in capsys.readouterr().out


N_KILLED = 30


def test_a_killed_sweep_run_again_finishes_with_no_job_trained_twice(tmp_path):
    base = tmp_path / "killed"
    # 30 iterations, killed at the first checkpoint after 2: the margin that lets the kill land mid-job on an idle
    # machine (with 6, the job could finish before the signal)
    common = [*TINY, f"optim.n_iterations={N_KILLED}", "run.checkpoint_every=2", f"run.dir={base}"]
    process = subprocess.Popen(cli("train", "-m", *common, "optim.seed=range(3)"), env=ENV, start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 200
    while not ((found := sorted(base.glob("1_*"))) and (latest := latest_checkpoint(found[0])) is not None
               and latest.name >= "ckpt_00000002.pt"):
        assert process.poll() is None and time.time() < deadline, process.stderr.read()
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGKILL)  # the whole sweep, mid-job, no handler runs
    process.wait()
    first, second = sorted(base.glob("0_*"))[0], found[0]
    killed_at = int(latest_checkpoint(second).stem.split("_")[1])
    assert killed_at < N_KILLED and not list(base.glob("2_*/checkpoints/*.pt"))
    before = {p: p.read_bytes() for p in first.rglob("*") if p.is_file()}
    assert main(["train", "-m", *common, "optim.seed=range(3)"]) == 0
    jobs = index_of(base)["jobs"]
    assert [j["status"] for j in jobs] == ["skipped", "done", "done"]  # none lost
    assert {p: p.read_bytes() for p in first.rglob("*") if p.is_file()} == before  # the done job untouched
    for job in jobs:
        assert [r["iteration"] for r in history(base / job["run_dir"])] == list(range(N_KILLED))
    straight = tmp_path / "straight"  # the resumed job equals an uninterrupted run, bit for bit
    assert main(["train", *common[:-1], "optim.seed=1", f"run.dir={straight}"]) == 0
    assert_same(torch.load(latest_checkpoint(straight), weights_only=True)["meta"],
                torch.load(latest_checkpoint(second), weights_only=True)["meta"])


def test_a_failed_job_is_reported_in_the_index_the_others_go_on_in_the_sweeps_wandb_group(tmp_path, capsys):
    base = tmp_path / "failing"
    common = ["train", "-m", *TINY[:-1], "wandb.mode=offline", "optim.n_iterations=2", f"run.dir={base}",
              "optim.seed=range(3)"]
    busy = job_directory(base, 1, [*common[2:-1], "optim.seed=1"])
    with RunLock.acquire(busy):  # another writer holds job 1's run directory when it starts
        assert main(common) == 2
    jobs = index_of(base)["jobs"]
    assert [(j["status"], j["exit"]) for j in jobs] == [("done", 0), ("failed", 2), ("done", 0)]
    assert re.fullmatch(rf"run.dir: '{re.escape(str(busy)[:40])}.*' is in use by process {os.getpid()} \(an "
                        r"eprop-l2l train writing it\); wait for it to finish, stop it, or choose another run.dir",
                        jobs[1]["error"]), jobs[1]["error"]
    assert capsys.readouterr().err == f"eprop-l2l: job 1 ({busy.name}): {jobs[1]['error']}\n"  # one line
    for job in (jobs[0], jobs[2]):  # the sweep's W&B group, as the offline runs record it
        assert wandb_run_group(base / job["run_dir"]) == "failing" == index_of(base)["wandb_group"]
    assert main(common) == 0  # run again: the failed job is trained, the others skipped
    assert [j["status"] for j in index_of(base)["jobs"]] == ["skipped", "done", "skipped"]


BAD_SWEEPS = [
    (["model.tau_m=20,-1"], r"model.tau_m: must be > 0, got -1.0 \(job 1 of 2: model.tau_m=-1.0\)"),
    (["optim.seed=range(2)", "hydra.launcher.n_job=2"], r"hydra.launcher.n_job: Key 'n_job' not in "),
    (["optim.seed=range(2)", "hydra/launcher=nope"], r"hydra/launcher: unknown launcher 'nope' \(installed: basic, "),
    (["optim.seed=range(2)", "hydra.sweep.dir=/elsewhere"], r"hydra.sweep.dir: Hydra's own settings are not used"),
    (["optim.seed=range(2)", "run.dir=a,b"], r"run.dir: is the multirun's directory .* cannot be swept"),
]


@pytest.mark.parametrize(("overrides", "message"), BAD_SWEEPS, ids=[" ".join(o) for o, _ in BAD_SWEEPS])
def test_an_invalid_job_or_launcher_stops_the_sweep_before_any_job_starts(overrides, message, tmp_path, capsys):
    launcher = [] if any(o.startswith("hydra/launcher") for o in overrides) else ["hydra/launcher=joblib"]
    run_dir = [] if any(o.startswith("run.dir") for o in overrides) else [f"run.dir={tmp_path / 'sweep'}"]
    assert main(["train", "-m", *TINY, *launcher, *overrides, *run_dir]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.count("\n") == 1, captured
    assert re.fullmatch(f"eprop-l2l: {message}.*\n", captured.err), captured.err
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_a_run_directory_of_another_configuration_refuses_the_whole_sweep(tmp_path, capsys):
    base = tmp_path / "sweep"
    common = ["train", "-m", *TINY, "optim.n_iterations=1", f"run.dir={base}"]
    assert main([*common, "optim.seed=0"]) == 0
    (name,) = [p.name for p in base.iterdir() if p.is_dir()]
    shutil.move(base / name, base / name.replace("seed=0", "seed=1").replace("0_", "1_", 1))
    capsys.readouterr()
    before = sorted(p.stat().st_mtime_ns for p in base.rglob("*"))
    assert main([*common, "optim.seed=0,1"]) == 2  # job 1's directory holds seed 0's run
    assert "holds a run with another configuration (optim.seed 0 → 1)" in capsys.readouterr().err
    assert not (base / name).exists() and sorted(p.stat().st_mtime_ns for p in base.rglob("*")) == before


# ------------------------------------------------------------------------------------------ multi-node


def test_two_nodes_through_the_slurm_batch_script_give_the_meta_gradient_of_one_process(tmp_path):
    """scripts/slurm/ddp.sbatch run as SLURM would run it (a stand-in `srun` starts one task per node with its
    SLURM_NODEID, `scontrol` names the first node): each task runs scripts/launch_distributed.sh, whose torchrun
    joins the other node through c10d rendezvous; float64 meta-gradients over 2 x 1 processes = 1 process."""
    from eprop_l2l.runs import distributed
    from tests.workers.meta_gradient import meta_gradient

    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "srun").write_text("#!/usr/bin/env bash\n# one task per node, as srun --ntasks-per-node=1\n"
                               "while [[ $1 == --* ]]; do shift; done\npids=()\n"
                               "for ((i = 0; i < SLURM_NNODES; i++)); do SLURM_NODEID=$i SLURM_PROCID=$i \"$@\" &"
                               " pids+=($!); done\ncode=0\nfor p in \"${pids[@]}\"; do wait $p || code=$?; done\n"
                               "exit $code\n")
    (fake / "scontrol").write_text("#!/usr/bin/env bash\necho 127.0.0.1\n")
    for tool in fake.iterdir():
        tool.chmod(0o755)
    out = tmp_path / "grads.pt"
    env = {**ENV, "PATH": f"{fake}{os.pathsep}{ENV['PATH']}", "SLURM_NNODES": "2", "SLURM_JOB_ID": "4242",
           "SLURM_JOB_NODELIST": "node[1-2]", "SLURM_SUBMIT_DIR": str(ROOT), "MASTER_PORT": str(free_port())}
    result = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "ddp.sbatch"), "--script",
                             str(ROOT / "tests" / "workers" / "meta_gradient.py"), str(out)],
                            env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    two = torch.load(out, weights_only=True)
    assert two["world_size"] == 2
    one = meta_gradient(distributed.setup())
    for key, grad in one.items():
        assert grad.dtype == torch.float64
        assert float((two["grads"][key] - grad).abs().max()) <= 1e-12 * float(grad.abs().max()), key


ERRORS = [  # (what the command raises, whether every process meets it alike)
    (lambda: ConfigError("model.tau_m", "must be > 0, got -1.0"), True),  # the same checks of the same config
    (lambda: LostPeer("distributed: during training, a process failed"), True),
    (lambda: KeyboardInterrupt(), True),
    (lambda: RunFault("training: disk full"), False),  # this process's own
    (lambda: ConfigError("LOCAL_RANK", "3: this machine has 2 GPUs"), False),  # its own variable
]


@pytest.mark.parametrize(("error", "shared"), ERRORS, ids=["refusal", "lost peer", "interrupt", "own fault", "own"])
@pytest.mark.parametrize("rank", [0, 1])
def test_an_error_of_a_multi_process_run_is_printed_once(error, shared, rank, monkeypatch, capsys):
    """torchrun sets RANK and WORLD_SIZE in every process: rank 0 prints what all processes meet alike, the
    others stay quiet; a failure of a process's own is printed by that process."""
    from eprop_l2l.commands import train

    def fail(*args, **kwargs):
        raise error()

    monkeypatch.setattr(train, "main", fail)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    code = main(["train", *TINY])
    assert code == {ConfigError: 2, LostPeer: 1, KeyboardInterrupt: 130, RunFault: 1}[type(error())]
    err = capsys.readouterr().err
    if rank == 1 and shared:
        assert err == ""
    else:
        assert err.count("\n") == 1 and err.startswith("eprop-l2l: "), err
