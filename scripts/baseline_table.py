"""Markdown table of meta-trained runs compared on the same held-out movements: one row per run directory (or a
committed copy of one), from its ``metrics.json`` (eval.seed) and, where present, a second seed's metrics
(``seed2026/metrics.json`` in a committed copy, or an ``evaluations/eval.seed=<seed>*`` directory of a run).

    python scripts/baseline_table.py "e-prop 2=docs/results/arm_cpu_60min_decay" \\
        "e-prop 1=docs/results/ablation_eprop1_cpu_60min" "MAML=docs/results/ablation_maml_cpu_60min" \\
        --out docs/results/ablations_cpu_60min.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def second_seed(run: Path, seed: int) -> dict | None:
    evaluations = sorted(run.glob(f"evaluations/eval.seed={seed}*/metrics.json"))
    candidates = [run / f"seed{seed}" / "metrics.json", *evaluations]
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    return None


def row(label: str, run: Path, seed: int) -> str:
    m = json.loads((run / "metrics.json").read_text())
    other = second_seed(run, seed)
    after_other = f"**{other['mse_cart_after']:.4f}** ± {other['mse_cart_after_sd']:.3f}" if other else "–"
    eta = f"{m['inner_lr']:.2g}" if "inner_lr" in m else "–"
    before = f"{m['mse_cart_before']:.3f} ± {m['mse_cart_before_sd']:.3f}"
    return (f"| {label} | {m.get('iterations', '–')} | {eta} | {before} | "
            f"**{m['mse_cart_after']:.4f}** ± {m['mse_cart_after_sd']:.3f} | {after_other} | "
            f"{m['mse_motor_after']:.1f} ± {m['mse_motor_after_sd']:.1f} | "
            f"{m['hand_rmse_after']:.3f} ± {m['hand_rmse_after_sd']:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="label=run directory")
    parser.add_argument("--second-seed", type=int, default=2026)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    pairs = []
    for item in args.runs:
        label, sep, path = item.partition("=")
        if not sep or not (Path(path) / "metrics.json").is_file():
            parser.error(f"{item!r}: expected label=run directory with a metrics.json")
        pairs.append((label, Path(path)))
    first = json.loads((pairs[0][1] / "metrics.json").read_text())
    lines = [f"Held-out movements: {first['n_tasks']} (eval.seed {first['seed']}, and {args.second_seed}); mean ± sd.",
             "",
             f"| inner loop | meta-iterations | η (meta-learned) | MSE_cart before | "
             f"MSE_cart after, seed {first['seed']} | "
             f"MSE_cart after, seed {args.second_seed} | MSE_motor after | RMS hand error after |",
             "|---|---|---|---|---|---|---|---|",
             *(row(label, run, args.second_seed) for label, run in pairs), ""]
    table = "\n".join(lines)
    if args.out:
        Path(args.out).write_text(table)
    print(table)


if __name__ == "__main__":
    main()
