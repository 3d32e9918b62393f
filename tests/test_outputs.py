"""The output policy (eprop_l2l/outputs.py) on every command that writes: nothing existing is replaced except
an earlier output of the same command under --force, nothing is written into or over a run directory, and the
refusal is one line with exit code 2 before anything is computed."""

from __future__ import annotations

import pytest

from eprop_l2l.cli import main
from eprop_l2l.outputs import OutputError, check_output_dir, check_output_file, enclosing_run

from .builders import digest, train_tiny_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("outputs") / "run")


def _refused(capsys, argv, message: str) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err, err


def test_export_never_writes_into_or_over_a_run(run, capsys):
    before = digest(run)
    for out in (run, run / "sub", run / "checkpoints"):
        _refused(capsys, ["export", str(run), "--target", "rule", "--out", str(out), "--force"],
                 "outputs go beside a run, never into it")
    assert digest(run) == before


def test_force_replaces_only_an_earlier_output_of_the_same_command(run, tmp_path, capsys):
    out = tmp_path / "export"
    argv = ["export", str(run), "--target", "rule", "--out", str(out), "--tasks", "1", "--calibration-tasks", "1"]
    assert main(argv) == 0
    _refused(capsys, argv, "exists and is not empty (use --force")
    assert main([*argv, "--force"]) == 0  # an earlier export: replaced
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    _refused(capsys, ["export", str(run), "--target", "rule", "--out", str(foreign), "--force"],
             "is not an earlier output of this command")
    assert (foreign / "notes.txt").read_text() == "mine"


def test_plot_never_replaces_a_file_of_the_run(run, capsys):
    figure = run / "one_shot.png"
    before = figure.read_bytes()
    _refused(capsys, ["plot", str(run), "--out", str(figure)], "exists: nothing existing is replaced")
    assert figure.read_bytes() == before
    assert main(["plot", str(run)]) == 0 and main(["plot", str(run)]) == 0  # its own curves: replaced


def test_table_never_writes_into_a_run(run, tmp_path, capsys):
    evaluation = tmp_path / "evaluation"
    assert main(["evaluate", str(run), "--out", str(evaluation), "eval.n_tasks=2", "eval.batch_size=2",
                 "eval.figures=false"]) == 0
    _refused(capsys, ["table", f"a={evaluation}", "--reference", "a", "--out", str(run / "table")],
             "outputs go beside a run, never into it")
    assert not (run / "table").exists()


def test_the_policy_itself(tmp_path, run):
    assert enclosing_run(run / "checkpoints" / "x") == run.resolve() and enclosing_run(tmp_path) is None
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a directory"):
        check_output_dir(tmp_path / "file")
    with pytest.raises(OutputError, match="does not exist"):
        check_output_dir(tmp_path / "missing" / "out")
    with pytest.raises(OutputError, match="exists: nothing existing is replaced"):
        check_output_file(tmp_path / "file", previous_name="other")
    assert check_output_file(tmp_path / "file", previous_name="file") == tmp_path / "file"
    assert check_output_dir(tmp_path / "new") == tmp_path / "new"
