"""``eprop-l2l hardware run DIR``: the Lava program in ``.venv-lava`` (its own Python 3.10 environment) on an
export, then the hand-path figure (matplotlib lives here, not in the Lava environment)."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..hardware.lava import launcher, report


def main(directory: str, args: list[str]) -> int:
    code = launcher.main([directory, *args])
    if code == 0:
        extra = argparse.ArgumentParser(add_help=False)
        extra.add_argument("--out")
        extra.add_argument("--precision", default="float")
        extra.add_argument("--no-figure", action="store_true")
        known, _ = extra.parse_known_args(args)
        out = Path(known.out) if known.out else Path(directory) / f"lava_{known.precision}"
        if not known.no_figure and (out / "lava_results.npz").exists():
            figure = report.figure_from_results(out)
            if figure:
                print(f"figure: {figure}")
    return code
