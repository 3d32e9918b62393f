"""``eprop-l2l export``: a trained model's inner-loop rule (``rule`` | ``lava``) or its networks (``nir``), with a
fidelity report (:mod:`eprop_l2l.hardware.export`)."""

from __future__ import annotations

from pathlib import Path

from ..outputs import claim
from ..runs.evaluation import evaluation_setup
from .guards import faults_naming


def export(target: str, out: str, kind: str, force: bool = False, tasks: int = 10, calibration_tasks: int = 10,
           precision: str | None = None) -> Path:
    """``eprop-l2l export``: a run directory's latest checkpoint (or a checkpoint file) as a rule, NIR or Lava
    export (:mod:`eprop_l2l.hardware.export`); returns the directory. Bad input raises a one-line error before
    anything is computed or written; a second export into the same ``out`` at once is refused (the lock of
    :func:`eprop_l2l.outputs.claim`, checked before the policy so that the policy sees the first one's result)."""
    from ..hardware.export import check_request, write_export

    with faults_naming("--out"), claim(out, "--out", "an eprop-l2l export"):
        out_dir, precision = check_request(kind, out, force, tasks, calibration_tasks, precision)
        cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(target)
        source = {"checkpoint": str(checkpoint), "iteration": iteration, "experiment": cfg.experiment}
        return write_export(out_dir, kind, precision, learner, meta, family, cfg, source, tasks, calibration_tasks)


def main(source: str, out: str, target: str, force: bool = False, tasks: int = 10, calibration_tasks: int = 10,
         precision: str | None = None) -> int:
    written = export(source, out, target, force, tasks, calibration_tasks, precision)
    print(f"export ({target}) written to {written}: {', '.join(sorted(p.name for p in written.iterdir()))}")
    print((written / "README.md").read_text(), end="")
    return 0
