"""``eprop-l2l evaluate``: one-shot evaluation of a run directory or checkpoint on held-out tasks, into a new
directory (``RUN/evaluations/<overrides>-<hash>/`` or ``--out``), never over existing results."""

from __future__ import annotations

import math

from ..config.compose import config_from_yaml
from ..runs.evaluation import (
    CONFIG_FILE,
    evaluate_meta,
    evaluation_directory,
    evaluation_setup,
    format_table,
    locate,
    training_compute,
)
from ..runtime import configure_cpu


def evaluate(target: str, overrides: list[str], out: str | None = None) -> int:
    """One-shot evaluation of a run directory's latest checkpoint (or a checkpoint file) into
    ``RUN/evaluations/<name>/`` or ``out``: never over the training's own outputs or an earlier evaluation.
    ``metrics.json`` carries the provenance (checkpoint, iteration, training device and seed, overrides)."""
    from .. import __version__

    cfg, learner, family, meta, reset, checkpoint, iteration = evaluation_setup(target, overrides)
    configure_cpu(cfg.run.threads or None)
    run_dir = locate(target)[0]
    trained = config_from_yaml(run_dir / CONFIG_FILE)
    out_dir, note = evaluation_directory(run_dir, overrides, out)
    print(f"evaluating {checkpoint} (iteration {iteration}, trained on {trained.run.device}) on {cfg.run.device}: "
          f"{cfg.eval.n_tasks} held-out tasks (seed {cfg.eval.seed}) → {out_dir}", flush=True)
    if note:
        print(note, flush=True)
    provenance = {"run": str(run_dir), "checkpoint": str(checkpoint), "iterations": iteration,
                  "experiment": trained.experiment, "trained_on": trained.run.device,
                  "training_seed": trained.optim.seed, "evaluated_on": cfg.run.device,
                  "overrides": list(overrides), "initialised": reset, "eprop_l2l_version": __version__,
                  **training_compute(run_dir, iteration, checkpoint)}
    summary = evaluate_meta(learner, meta, family, cfg, out_dir, provenance, progress=cfg.run.progress)
    print(format_table(summary))
    if reset:
        print(f"initialised (not from the checkpoint): {', '.join(reset)}")
    print(f"metrics: {out_dir / 'metrics.json'}" + (f"   figure: {out_dir / 'one_shot.png'}" if cfg.eval.figures
                                                     else ""))
    return 0 if all(math.isfinite(v) for v in summary.values() if isinstance(v, float)) else 1
