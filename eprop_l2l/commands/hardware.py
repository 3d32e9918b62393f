"""``eprop-l2l hardware run DIR``: the Lava program in ``.venv-lava`` (its own Python 3.10 environment) on an
export, then the hand-path figure (matplotlib lives here, not in the Lava environment).

One writer of ``--out`` at a time (:func:`eprop_l2l.outputs.claim`, held here for the Lava program's whole run),
and SIGTERM, like Ctrl-C, ends the Lava program's session before this returns (:mod:`.guards`), so that no
orphan writes a report later."""

from __future__ import annotations

import argparse
from contextlib import nullcontext
from pathlib import Path

from ..hardware.lava import launcher, report
from ..outputs import claim
from .guards import faults_naming, interrupt_on_terminate


def main(directory: str, args: list[str]) -> int:
    extra = argparse.ArgumentParser(add_help=False, exit_on_error=False)
    extra.add_argument("--out")
    extra.add_argument("--precision", default="float")
    extra.add_argument("--no-figure", action="store_true")
    try:
        known, _ = extra.parse_known_args(args)
    except (argparse.ArgumentError, SystemExit):  # a malformed option: the Lava program refuses it in its own words
        known = None
    out = (Path(known.out) if known.out else Path(directory) / f"lava_{known.precision}") if known else None
    with interrupt_on_terminate(), faults_naming("--out"), \
            claim(out, "--out", "an eprop-l2l hardware run") if out else nullcontext():
        code = launcher.main([directory, *args])
    if code == 0 and known and not known.no_figure and (out / "lava_results.npz").exists():
        figure = report.figure_from_results(out)
        if figure:
            print(f"figure: {figure}")
    return code
