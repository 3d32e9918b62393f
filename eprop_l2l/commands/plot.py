"""``eprop-l2l plot``: training curves of a run (``history.jsonl`` → PNG), or a multirun's summary table
(Markdown, CSV), drawn by :mod:`eprop_l2l.runs.plots`."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from ..outputs import OutputError, enclosing_run
from ..runs.plots import plot_curves, read_history, runs_of, summary_rows, summary_tables
from ..runs.rundir import write_atomic
from .guards import faults_naming


def plot(target: str, out: str | None = None) -> int:
    """``eprop-l2l plot``: training curves of a run directory, or the summary of a multirun directory
    (``summary.md``, ``summary.csv``, in the multirun directory or ``out``)."""
    with faults_naming("--out"):
        return _plot(target, out)


def _plot(target: str, out: str | None) -> int:
    path = Path(target)
    if not path.is_dir():
        raise ConfigError(str(path), "no such run or multirun directory")
    if (path / "history.jsonl").exists() or not runs_of(path):
        written, data = plot_curves(path, Path(out) if out else None)
        print(f"training curves ({sum(1 for _ in read_history(path))} meta-iterations): {written}")
        return 0
    columns, rows = summary_rows(path)
    markdown, table = summary_tables(columns, rows)
    folder = Path(out) if out else path
    run = enclosing_run(folder)
    if run is not None:
        raise OutputError("--out", f"{folder} is or lies inside the run directory {run}: outputs go beside a run, "
                          "never into it")
    folder.mkdir(parents=True, exist_ok=True)
    for name, text in (("summary.md", markdown), ("summary.csv", table)):  # staged and renamed, each
        write_atomic(folder / name, text)
    print(markdown, end="")
    print(f"summary of {len(rows)} runs: {folder / 'summary.md'}, {folder / 'summary.csv'}")
    return 0
