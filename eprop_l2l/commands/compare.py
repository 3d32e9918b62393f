"""``eprop-l2l compare``: every learning rule on one task family and cell, with the same seeds and budget — the
configuration is :mod:`eprop_l2l.config.comparison`'s, the running and the reports
:mod:`eprop_l2l.runs.rule_comparison`'s."""

from __future__ import annotations

from pathlib import Path

from ..config.comparison import load_config
from ..outputs import check_output_dir, claim
from ..runs.rule_comparison import OUTPUT_FILES, compare, markdown
from .guards import faults_naming, interrupt_on_terminate


def main(preset: str, overrides: list[str], out: str | None) -> int:
    """SIGTERM, like Ctrl-C, ends the worker processes (``isolate=true``) and leaves ``--out`` as it was; one
    comparison writes an ``--out`` at a time."""
    config = load_config(preset, overrides)
    out_dir = Path(out or f"runs/compare/{Path(preset).stem}")
    # the output policy, with --force implied for compare's own earlier results: a re-run replaces them (the
    # default --out is one per preset), never a run directory, a file or another command's folder
    check_output_dir(out_dir, "--out", force=True,
                     previous=lambda folder: {p.name for p in folder.iterdir()} <= set(OUTPUT_FILES))
    with interrupt_on_terminate(), faults_naming("--out"), claim(out_dir, "--out", "an eprop-l2l compare"):
        results = compare(config, out_dir)
    print(markdown(config, results["summary"]), end="")
    print(f"results: {out_dir.resolve()}/results.{{md,json}}, learning_curves.png")
    return 0
