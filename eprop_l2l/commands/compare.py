"""``eprop-l2l compare``: every learning rule on one task family and cell, with the same seeds and budget — the
configuration is :mod:`eprop_l2l.config.comparison`'s, the running and the reports
:mod:`eprop_l2l.runs.rule_comparison`'s."""

from __future__ import annotations

from pathlib import Path

from ..config.comparison import load_config
from ..runs.rule_comparison import compare, markdown


def main(preset: str, overrides: list[str], out: str | None) -> int:
    config = load_config(preset, overrides)
    out_dir = Path(out or f"runs/compare/{Path(preset).stem}")
    results = compare(config, out_dir)
    print(markdown(config, results["summary"]), end="")
    print(f"results: {out_dir.resolve()}/results.{{md,json}}, learning_curves.png")
    return 0
