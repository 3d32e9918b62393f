"""``eprop-l2l table``: the one-shot comparison table of several methods from their evaluation directories
(paired statistics on the same movements, :mod:`eprop_l2l.runs.comparison`), printed as Markdown and written as
Markdown and CSV."""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..errors import ConfigError
from ..outputs import claim
from ..runs.comparison import COLUMNS, check_out, comparison_rows, parse_row, write_table
from ..runs.plots import summary_tables
from .guards import faults_naming


def table(row_specs: list[str], reference: str | None, out: str | None, metric: str) -> int:
    rows = [parse_row(spec) for spec in row_specs]
    if not rows:
        raise ConfigError("rows", "give at least one row: LABEL=DIR[,DIR...]")
    target = Path(out) if out else None
    with faults_naming("--out"), contextlib.ExitStack() as held:
        if target is not None:
            held.enter_context(claim(target, "--out", "an eprop-l2l table"))  # one writer of --out at a time
            check_out(target)  # before any reading
        result = comparison_rows(rows, reference or rows[0][0], metric)
        markdown, _ = summary_tables(list(COLUMNS), result)
        print(markdown, end="")
        if target is not None:
            md, csv_path = write_table(result, target)
            print(f"written: {md}, {csv_path}")
    return 0
