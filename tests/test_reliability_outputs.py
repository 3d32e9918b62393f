"""The commands that write an output (export, hardware run, compare, plot, table) against concurrent writers,
killed writers, signals, absurd sizes and failing file systems: one writer of an ``--out`` at a time (a second
is refused in one line, exit 2), stale staging folders of killed writers removed (nothing else), SIGTERM/SIGINT
end the children too and leave ``--out`` as it was, ``compare``'s sizes bounded before any compute, and every
message names the flag the user passed."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eprop_l2l.cli import main
from eprop_l2l.outputs import claim

from .builders import digest, train_tiny_run
from .processes import alive, children

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
       "OMP_NUM_THREADS": "1"}
EXPORT = ("--target", "rule", "--tasks", "1", "--calibration-tasks", "1")
# holds the lock of an output, as a writer in the middle of its work does
HOLDER = ("import sys, time\nfrom eprop_l2l.outputs import claim\nwith claim(sys.argv[1], what=sys.argv[2]):\n"
          "    print('held', flush=True)\n    time.sleep(300)\n")
# stands for the Lava program: works a while, then writes its report into --out, as an orphan would
FAKE_LAVA = """#!/bin/sh
out=""
while [ $# -gt 0 ]; do [ "$1" = "--out" ] && out="$2"; shift; done
sleep 4
mkdir -p "$out" && echo '{}' > "$out/lava_report.json"
"""



def refused(capsys, argv, *fragments: str, code: int = 2) -> str:
    assert main(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "internal error" not in err and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("reliability_outputs") / "run")


@pytest.fixture
def holder():
    """Start a process that holds the lock of an output; yields a function ``hold(out) -> pid``."""
    started = []

    def hold(out: Path, what: str = "an eprop-l2l export") -> int:
        proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), what], env=ENV, stdout=subprocess.PIPE,
                                text=True)
        started.append(proc)
        assert proc.stdout.readline().strip() == "held"
        return proc.pid

    yield hold
    for proc in started:
        proc.kill()
        proc.wait(timeout=30)


# ------------------------------------------------------------------------------------- one writer of --out


def test_a_second_export_into_the_same_out_is_refused_while_the_first_holds_it(run, tmp_path, holder, capsys):
    out = tmp_path / "export"
    pid = holder(out)
    before = digest(tmp_path)
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out)],
            f"--out: {out} is being written by process {pid} (an eprop-l2l export)", "choose another --out")
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out), "--force"], f"process {pid}")
    assert digest(tmp_path) == before and not out.exists()


def test_table_plot_and_hardware_run_take_the_same_lock(run, tmp_path, holder, capsys, monkeypatch):
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", str(run), "--out", str(evaluation), "eval.n_tasks=2", "eval.batch_size=2",
                 "eval.figures=false"]) == 0
    table, figure, report = tmp_path / "table", tmp_path / "curves.png", tmp_path / "report"
    pids = [holder(table), holder(figure), holder(report)]
    fake = tmp_path / "fake_lava"
    fake.write_text(FAKE_LAVA)
    fake.chmod(0o755)
    monkeypatch.setenv("EPROP_L2L_LAVA_PYTHON", str(fake))
    before, run_before = digest(tmp_path), digest(run)
    refused(capsys, ["table", f"a={evaluation}", "--reference", "a", "--out", str(table)], f"process {pids[0]}")
    refused(capsys, ["plot", str(run), "--out", str(figure)], f"process {pids[1]}")
    refused(capsys, ["hardware", "run", str(tmp_path), "--out", str(report)], f"--out: {report}",
            f"process {pids[2]}")
    time.sleep(0.5)
    assert digest(tmp_path) == before and digest(run) == run_before


def test_the_lock_goes_with_a_killed_writer_and_leaves_no_file(run, tmp_path, capsys):
    out = tmp_path / "export"
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(out), "x"], env=ENV, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    assert (tmp_path / ".export.lock").is_file()
    proc.kill()  # kill -9: no clean-up ran, the kernel dropped the flock
    proc.wait(timeout=30)
    assert main(["export", str(run), *EXPORT, "--out", str(out)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # neither the lock file nor a staging folder
    with claim(out):  # and a released lock can be taken again at once
        assert (tmp_path / ".export.lock").is_file()
    assert not (tmp_path / ".export.lock").exists()


# --------------------------------------------------------------------------------------- stale staging


def test_stale_staging_of_the_same_output_is_removed_and_nothing_else(run, tmp_path):
    out = tmp_path / "export"
    stale = tmp_path / ".export.tmp-abc_1234"
    (stale / "sub").mkdir(parents=True)
    (stale / "sub" / "weights.npz").write_bytes(b"half")
    kept = [tmp_path / ".export.tmp-short", tmp_path / ".other.tmp-abcd1234", tmp_path / "export.tmp-abcd1234",
            tmp_path / ".export.old-123", tmp_path / ".export.tmp-x.tmp-abcd1234", tmp_path / ".export.tmp-ABCD1234"]
    for folder in kept:
        folder.mkdir()
        (folder / "keep").write_text("mine")
    before = {p.name: digest(p) for p in kept}
    assert main(["export", str(run), *EXPORT, "--out", str(out)]) == 0
    assert not stale.exists()
    assert {p.name: digest(p) for p in kept} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*(p.name for p in kept), "export"])


def test_staging_is_left_alone_while_its_writer_holds_the_lock_and_a_plot_cleans_its_own(run, tmp_path, holder,
                                                                                          capsys):
    out = tmp_path / "export"
    pid = holder(out)
    live = tmp_path / ".export.tmp-live1234"  # staged by the holder, after it took the lock
    live.mkdir()
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out)], f"process {pid}")
    assert live.is_dir()  # the holder may be writing it
    figure = tmp_path / "curves.png"
    stale = tmp_path / ".curves.png.tmp-dead1234.png"
    stale.write_bytes(b"half a png")
    assert main(["plot", str(run), "--out", str(figure)]) == 0
    assert not stale.exists() and figure.read_bytes().startswith(b"\x89PNG")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".export.lock", live.name, figure.name]


# -------------------------------------------------------------------------------------------- signals


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen):
    deadline = time.time() + timeout
    while not (found := condition()):
        assert proc.poll() is None, (what, proc.communicate())
        assert time.time() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return found


def stop_and_check(proc: subprocess.Popen, sig: int, watched: list[int]) -> str:
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "eprop-l2l: interrupted" and "Traceback" not in err, err
    deadline = time.time() + 5
    while any(alive(p) for p in watched) and time.time() < deadline:
        time.sleep(0.05)
    assert not [p for p in watched if alive(p)], "a child outlived the command"
    return err


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_to_hardware_run_ends_the_lava_program_and_nothing_is_written_later(sig, tmp_path):
    fake = tmp_path / "fake_lava"
    fake.write_text(FAKE_LAVA)
    fake.chmod(0o755)
    out = tmp_path / "report"
    proc = subprocess.Popen([sys.executable, "-m", "eprop_l2l.cli", "hardware", "run", str(tmp_path), "--out",
                             str(out)], env={**ENV, "EPROP_L2L_LAVA_PYTHON": str(fake)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    program = wait_for(lambda: children(proc.pid), 60, "Lava program", proc)
    stop_and_check(proc, sig, program)
    time.sleep(4.5)  # the program would have written its report by now
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["fake_lava"]


def test_a_signal_while_the_lava_program_is_being_started_still_ends_it(tmp_path, monkeypatch):
    """The race a loaded machine exposed: SIGTERM arriving inside Popen (after the fork, before Popen returns)
    raised there, before the launcher held the process, and the program ran on and wrote its report. Deferred
    to after the start, the signal ends the program's session."""
    import subprocess as sp

    from eprop_l2l.hardware.lava import launcher

    class Interrupted(Exception):
        pass

    def interrupt(signum, frame):
        raise Interrupted

    started = []

    class SignalledDuringStart(sp.Popen):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.pid)
            os.kill(os.getpid(), signal.SIGTERM)  # as if it came in the fork-exec window

    fake = tmp_path / "fake_lava"
    fake.write_text(FAKE_LAVA)
    fake.chmod(0o755)
    out = tmp_path / "report"
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        monkeypatch.setattr(launcher.subprocess, "Popen", SignalledDuringStart)
        with pytest.raises(Interrupted):
            launcher.run([str(tmp_path), "--out", str(out)], python=fake)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert started and not alive(started[0])
    time.sleep(4.5)  # the program would have written its report by now
    assert not out.exists()


@pytest.mark.parametrize("earlier", [False, True])
def test_sigterm_to_compare_ends_its_workers_and_leaves_out_as_it_was(earlier, tmp_path):
    out = tmp_path / "compare"
    if earlier:  # an earlier comparison's results stay byte-identical
        out.mkdir()
        (out / "results.json").write_text('{"earlier": true}')
        (out / "results.md").write_text("earlier")
    before = digest(tmp_path)
    proc = subprocess.Popen([sys.executable, "-m", "eprop_l2l.cli", "compare", "tiny", "iterations=1000000",
                             "rules=bptt,rtrl", "--out", str(out)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)

    def worker():
        return [p for p in children(proc.pid) if b"spawn_main" in Path(f"/proc/{p}/cmdline").read_bytes()]

    workers = wait_for(worker, 120, "compare worker", proc)
    time.sleep(1.0)  # well into its run
    stop_and_check(proc, signal.SIGTERM, [*workers, *children(proc.pid)])
    assert digest(tmp_path) == before


# --------------------------------------------------------------------------------------- compare's bounds


@pytest.mark.parametrize(("override", "message"), [
    ("iterations=1000000000", "iterations: 1,000,000,000 is above the limit of 1,000,000"),
    ("cell.n_rec=1000000", "cell.n_rec: 1,000,000 is above the limit of 100,000"),
    ("task.pattern_length=1000000000", "task.pattern_length: a trial of n_steps = "),
    ("task.frame_steps=10000000", "task.frame_steps: a trial of n_steps = "),
    (f"seeds=[{','.join(map(str, range(1001)))}]", "seeds: 1,001 seeds is above the limit of 1,000"),
    ("eval_every=10000000", "eval_every: 10,000,000 is above"),
    ("batch_size=1000000", "batch_size: 1,000,000 is above"),
    ("max_pattern_length=100000", "max_pattern_length: 100,000 is above"),
])
def test_compare_sizes_are_bounded_before_any_compute(override, message, tmp_path, capsys):
    out = tmp_path / "compare"
    started = time.perf_counter()
    refused(capsys, ["compare", "tiny", override, "--out", str(out)], message)
    assert time.perf_counter() - started < 30 and not out.exists() and not any(tmp_path.iterdir())


@pytest.mark.parametrize(("overrides", "key"), [(["cell.n_rec=20000"], "cell.n_rec"),
                                                (["batch_size=50000", "task.pattern_length=400"], "batch_size")])
def test_compare_memory_is_estimated_before_any_compute(overrides, key, tmp_path, capsys, monkeypatch):
    from eprop_l2l.runs import resources

    monkeypatch.setattr(resources, "available_memory", lambda device="cpu": (2.0 * 2**30, "available"))
    out = tmp_path / "compare"
    refused(capsys, ["compare", "tiny", *overrides, "rules=bptt", "--out", str(out)],
            f"{key}: one rule needs about", "2 GB available", f"lower {key}", "memory_check=false")
    assert not out.exists()


@pytest.mark.parametrize("where", ["run", "inside_run", "foreign"])
def test_compare_refuses_a_run_directory_and_another_commands_folder(where, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    for name in ("config.yaml", "history.jsonl", "manifest.json"):
        (run / name).write_text("{}\n")
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    out, fragment = {"run": (run, "is a run directory"), "inside_run": (run / "checkpoints", "inside the run"),
                     "foreign": (foreign, "not an earlier output of this command")}[where]
    before = digest(tmp_path)
    refused(capsys, ["compare", "tiny", "iterations=1", "--out", str(out)], "--out: ", fragment)
    assert digest(tmp_path) == before


# ------------------------------------------------------------------------------------------- messages


@pytest.mark.parametrize("content", [bytes(range(256)) * 4, b'{"iteration": 0}\n\xff\xfe{"iteration": 1}\n'])
def test_plot_of_a_binary_history_names_the_file(content, tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "history.jsonl").write_bytes(content)
    before = digest(tmp_path)
    refused(capsys, ["plot", str(run_dir)], f"{run_dir / 'history.jsonl'}: not a text file (binary data at byte")
    assert digest(tmp_path) == before


def _no_space(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device", "somewhere")


def test_a_full_disk_names_out_and_leaves_no_half_written_output(tmp_path, capsys, monkeypatch):
    from eprop_l2l.runs import rule_comparison

    out = tmp_path / "compare"
    out.mkdir()
    (out / "results.md").write_text("earlier")
    before = digest(tmp_path)
    monkeypatch.setattr(rule_comparison, "figure", _no_space)  # the last of the three files fails
    refused(capsys, ["compare", "tiny", "iterations=1", "rules=bptt", "--in-process", "--out", str(out)],
            "no space left on the file system: free space or choose a --out on another file system", code=1)
    assert digest(tmp_path) == before


def test_a_full_disk_during_export_names_out(run, tmp_path, capsys, monkeypatch):
    from eprop_l2l.hardware import export

    out = tmp_path / "export"
    monkeypatch.setattr(export, "_readme", _no_space)
    refused(capsys, ["export", str(run), *EXPORT, "--out", str(out)], "choose a --out on another file system",
            code=1)
    assert not any(tmp_path.iterdir())
