"""``eprop-l2l demo-eprop1``: the e-prop 1 pattern-generation demo (:mod:`eprop_l2l.demo`)."""

from __future__ import annotations

from pathlib import Path

from ..demo import run
from ..error_modules.feedback import FEEDBACK_KINDS
from ..errors import ConfigError, require_choice


def main(out_dir: str = "runs/demo", feedback: str = "random", n_iterations: int = 150, seed: int = 0) -> int:
    require_choice("--feedback", feedback, FEEDBACK_KINDS)
    if n_iterations < 1:
        raise ConfigError("--iterations", f"must be >= 1, got {n_iterations}")
    metrics = run(out_dir, feedback, n_iterations, seed)
    print(f"normalised MSE: {metrics['nmse_first_iteration']:.3f} (first iteration) -> "
          f"{metrics['nmse_last_iteration']:.3f} (after {metrics['n_iterations']} e-prop updates), "
          f"{metrics['firing_rate_hz']:.1f} Hz, {metrics['wall_time_s']:.0f} s")
    print(f"figure and metrics: {Path(out_dir).resolve()}")
    return 0
