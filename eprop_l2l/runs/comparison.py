"""The one-shot comparison table of several methods (``eprop-l2l table``: :mod:`eprop_l2l.commands.table`),
built from evaluation directories only.

A row is a method: one evaluation directory (``metrics.json`` + ``per_task.json``, as ``train`` and ``evaluate``
write them) per training seed and movement set. For each row and held-out movement set the table gives

* the across-seed mean ± sd of each seed's mean error (the training-seed spread),
* the median, inter-quartile range and mean ± sem over movements of the seed-averaged per-movement error,
* against the reference row, on the same movements: the win rate (fraction of movements where the row's error
  is lower) and the mean paired log-ratio log(row / reference) with a 95 % bootstrap confidence interval.

The information each row's inner rule was given and its compute (meta-iterations, CPU minutes) come from the
evaluations' own records, so every number can be regenerated from committed run directories.
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError
from ..outputs import check_output_dir
from .plots import summary_tables

BOOTSTRAP_RESAMPLES = 10_000
BOOTSTRAP_SEED = 0  # the confidence intervals are reproducible: one fixed generator
COLUMNS = ("row", "information", "movement set", "training seeds", "iterations", "CPU minutes", "mean", "sd",
           "median", "IQR", "mean over movements", "sem", "win rate", "log-ratio", "log-ratio 95% CI")


@dataclass(frozen=True)
class Evaluation:
    path: Path
    movement_set: str  # "<n_tasks>@<seed>": the held-out movements it was scored on
    values: np.ndarray  # per-movement error [n_tasks]
    metrics: dict


def read_evaluation(path: Path, metric: str) -> Evaluation:
    path = Path(path)
    try:
        metrics = json.loads((path / "metrics.json").read_text())
        per_task = json.loads((path / "per_task.json").read_text())
    except FileNotFoundError as err:
        raise ConfigError(str(path), f"not an evaluation directory: {Path(err.filename).name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(str(path), f"unreadable evaluation record: {type(err).__name__}") from None
    if not isinstance(metrics, dict) or not isinstance(per_task, dict) or metric not in per_task:
        raise ConfigError(str(path), f"its per_task.json has no {metric!r}")
    values = np.asarray(per_task[metric], dtype=np.float64)
    if values.ndim != 1 or values.size == 0 or not np.isfinite(values).all() or (values <= 0).any():
        raise ConfigError(str(path), f"{metric} must be a list of finite positive errors")
    if "seed" not in metrics or values.size != metrics.get("n_tasks"):
        raise ConfigError(str(path), "metrics.json does not record the movement set (seed, n_tasks)")
    return Evaluation(path, f"{values.size}@{metrics['seed']}", values, metrics)


def parse_row(spec: str) -> tuple[str, list[Path]]:
    """``LABEL=DIR[,DIR...]``."""
    label, sep, dirs = spec.partition("=")
    if not sep or not label.strip() or not dirs.strip():
        raise ConfigError(spec, "a row is LABEL=DIR[,DIR...] (one evaluation directory per seed and movement set)")
    return label.strip(), [Path(d) for d in dirs.split(",") if d]


def bootstrap_mean_ci(values: np.ndarray, generator: np.random.Generator) -> tuple[float, float]:
    index = generator.integers(0, values.size, size=(BOOTSTRAP_RESAMPLES, values.size))
    means = values[index].mean(1)
    return float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def _mean_of(evaluations: list[Evaluation], key: str) -> float | None:
    found = [e.metrics[key] for e in evaluations if isinstance(e.metrics.get(key), int | float)]
    return float(np.mean(found)) if len(found) == len(evaluations) else None


def comparison_rows(rows: list[tuple[str, list[Path]]], reference: str, metric: str = "mse_cart_after"
                    ) -> list[dict]:
    labels = [label for label, _ in rows]
    if len(set(labels)) != len(labels):
        raise ConfigError("rows", f"row labels must be distinct, got {labels}")
    if reference not in labels:
        raise ConfigError("--reference", f"{reference!r} is not one of the rows ({', '.join(labels)})")
    grouped: dict[str, dict[str, list[Evaluation]]] = {}
    for label, dirs in rows:
        for evaluation in (read_evaluation(d, metric) for d in dirs):
            grouped.setdefault(label, {}).setdefault(evaluation.movement_set, []).append(evaluation)
    out = []
    for label in labels:
        for movement_set, evaluations in sorted(grouped[label].items()):
            ref = grouped[reference].get(movement_set)
            if ref is None:
                raise ConfigError(label, f"movement set {movement_set} has no evaluation of the reference row "
                                  f"{reference!r}: the paired statistics need the same movements")
            per_seed = np.array([e.values.mean() for e in evaluations])
            v = np.mean([e.values for e in evaluations], axis=0)  # per movement, averaged over training seeds
            information = sorted({str(e.metrics.get("information", "not recorded")) for e in evaluations})
            q25, q75 = np.quantile(v, [0.25, 0.75])
            row = {"row": label, "information": " / ".join(information), "movement set": movement_set,
                   "training seeds": len(evaluations), "iterations": _mean_of(evaluations, "iterations"),
                   "CPU minutes": _mean_of(evaluations, "cpu_minutes"), "mean": float(per_seed.mean()),
                   "sd": float(per_seed.std(ddof=1)) if per_seed.size > 1 else None,
                   "median": float(np.median(v)), "IQR": f"{q25:.4g}–{q75:.4g}",
                   "mean over movements": float(v.mean()),
                   "sem": float(v.std(ddof=1) / math.sqrt(v.size)) if v.size > 1 else None,
                   "win rate": None, "log-ratio": None, "log-ratio 95% CI": None}
            if label != reference:
                v_ref = np.mean([e.values for e in ref], axis=0)
                log_ratio = np.log(v / v_ref)
                low, high = bootstrap_mean_ci(log_ratio, np.random.default_rng(BOOTSTRAP_SEED))
                row.update({"win rate": float((v < v_ref).mean()), "log-ratio": float(log_ratio.mean()),
                            "log-ratio 95% CI": f"[{low:.3f}, {high:.3f}]"})
            out.append(row)
    return out


def check_out(out: Path) -> Path:
    """The folder ``out`` will be created in: ``out`` by the output policy (:mod:`eprop_l2l.outputs`; no
    ``--force``: nothing existing is replaced)."""
    check_output_dir(out, "--out")
    return out.resolve().parent


def write_table(rows: list[dict], out: Path) -> tuple[Path, Path]:
    """``table.md`` and ``table.csv`` in ``out``, which must be new or empty; staged in a sibling folder and
    renamed into place, so an interrupted write leaves nothing half-written and nothing existing is replaced."""
    out = Path(out)
    parent = check_out(out)
    markdown, table = summary_tables(list(COLUMNS), rows)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
    try:
        (staging / "table.md").write_text(markdown)
        (staging / "table.csv").write_text(table)
        if out.exists():
            out.rmdir()  # empty, checked above
        staging.rename(out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out / "table.md", out / "table.csv"
