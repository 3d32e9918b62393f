"""The committed run directories (``docs/results/**`` with a ``checkpoints/`` folder) and their re-evaluation on
a few held-out movements: shared by ``test_committed_runs.py`` and ``scripts/pin_committed_runs.py``."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN_FILE = ROOT / "tests" / "data" / "committed_runs.json"
N_TASKS = 3  # held-out movements per run: enough to pin every code path of the evaluation, cheap for 14 runs
SEED = 12345  # the evaluation stream of the results


def committed_runs() -> list[Path]:
    return sorted(p.parent for p in (ROOT / "docs" / "results").rglob("checkpoints") if p.is_dir()
                  and (p.parent / "config.yaml").exists())


def reevaluate(run: Path) -> dict[str, float]:
    """The one-shot summary of ``run``'s latest checkpoint on the first ``N_TASKS`` movements of ``SEED``."""
    from eprop_l2l.meta.evaluate import evaluate_one_shot
    from eprop_l2l.runs.evaluation import evaluation_setup

    _, learner, family, meta, _, _, _ = evaluation_setup(str(run), [f"eval.seed={SEED}"])
    summary, _, _ = evaluate_one_shot(learner, meta, family, n_tasks=N_TASKS, seed=SEED, batch_size=N_TASKS,
                                      example=False)
    return {k: v for k, v in summary.items() if isinstance(v, float)}
