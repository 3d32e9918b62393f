"""What limits one-shot learning on the arm: which held-out movements the learned rule fails on.

Regenerates the evaluation's movements exactly as ``eprop-l2l evaluate`` drew them (``eval.seed``, batches of
``eval.batch_size``), reads the per-movement errors of the given evaluation directories (several training seeds
of one row), and reports

* how concentrated the error is (share of the total from the worst 10 % of movements; mean vs median);
* Spearman rank correlations of the seed-averaged error after the update with properties of the movement: its
  speed (RMS target joint velocity), its extent (RMS distance of the hand from the start), its curvature (RMS
  joint acceleration), the error before the update, and the error of the target scaled ×0.8 (how sensitive
  the movement's Cartesian score is to a uniform speed error);
* whether the training seeds agree on which movements are hard (rank correlation between seeds).

    python scripts/analyse_one_shot_errors.py DIR [DIR ...] --out docs/results/eprop2_budget45/analysis.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from eprop_l2l.task_families import make_task_family
from eprop_l2l.task_families.arm_objective import arm_errors


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def movements(seed: int, n_tasks: int, batch_size: int):
    family = make_task_family("arm_sines", dt_ms=1.0)
    generator = torch.Generator().manual_seed(seed)
    batches, done = [], 0
    while done < n_tasks:
        size = min(batch_size, n_tasks - done)
        batches.append(family.sample(size, generator))
        done += size
    omega = torch.cat([b.targets for b in batches]).double()
    hand = torch.cat([b.extra["hand"] for b in batches]).double()
    batch = batches[0].__class__(omega, omega, torch.ones(omega.shape[:2]), {"hand": hand}, batches[0].dt_ms)
    return omega, hand, batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("evaluations", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="Markdown file to write (must not exist)")
    args = parser.parse_args(argv)
    metrics = [json.loads((d / "metrics.json").read_text()) for d in args.evaluations]
    per_task = [json.loads((d / "per_task.json").read_text()) for d in args.evaluations]
    seeds = {(m["seed"], m["n_tasks"]) for m in metrics}
    if len(seeds) != 1:
        raise SystemExit(f"the evaluations are of different movement sets: {sorted(seeds)}")
    (seed, n_tasks), = seeds
    omega, hand, batch = movements(seed, n_tasks, 50)
    after = np.array([p["mse_cart_after"] for p in per_task])  # [seeds, movements]
    before = np.array([p["mse_cart_before"] for p in per_task]).mean(0)
    mean_after = after.mean(0)
    features = {
        "speed (RMS ω*)": omega.pow(2).mean((1, 2)).sqrt().numpy(),
        "extent (RMS hand distance from the start)": (hand - hand[:, :1]).pow(2).sum(-1).mean(-1).sqrt().numpy(),
        "curvature (RMS joint acceleration)": omega.diff(dim=1).pow(2).mean((1, 2)).sqrt().numpy(),
        "error before the update": before,
        "error of ω*×0.8": arm_errors(0.8 * omega, batch)["mse_cart"].numpy(),
    }
    worst = np.sort(mean_after)[::-1][: max(1, n_tasks // 10)]
    lines = [f"# What limits one-shot learning: {len(args.evaluations)} training seeds, {n_tasks} movements "
             f"(eval.seed {seed})", "",
             f"- MSE_cart after one update, seed-averaged per movement: mean {mean_after.mean():.4f}, median "
             f"{np.median(mean_after):.4f}, 90th percentile {np.quantile(mean_after, 0.9):.4f}, max "
             f"{mean_after.max():.4f}.",
             f"- The worst 10 % of movements carry {worst.sum() / mean_after.sum():.0%} of the total error.",
             f"- Movements at or below 0.01: {(mean_after <= 0.01).mean():.0%}.", ""]
    if len(after) > 1:
        pairs = [spearman(after[i], after[j]) for i in range(len(after)) for j in range(i + 1, len(after))]
        lines.append(f"- Agreement between training seeds on which movements are hard (Spearman ρ of the "
                     f"per-movement errors, each pair of seeds): {', '.join(f'{p:.2f}' for p in pairs)}.")
        lines.append("")
    lines += ["| property of the movement | Spearman ρ with the error after the update |", "|---|---|"]
    lines += [f"| {name} | {spearman(values, mean_after):+.2f} |" for name, values in features.items()]
    lines.append("")
    with args.out.open("x") as f:  # never overwrites
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
