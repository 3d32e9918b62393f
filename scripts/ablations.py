"""Ablation table of a trained run, on the same held-out tasks (eval.seed) as its one-shot evaluation:

* e-prop 2 — the trained learner: learned error module, one e-prop update with the meta-learned η;
* no inner update — the meta-learned initial weights alone (inner.n_updates=0);
* error module at its initialisation — trained learning network, untrained error module (eval.reinit=[em_]);
* e-prop 1 — the learning signal is the output error through a random feedback matrix (error_module.kind=
  feedback), η tuned on a grid on validation tasks (optim.validation_seed), never on the held-out ones;
* MAML-style step — one exact BPTT gradient step of the demonstration's loss (inner.rule=bptt), η tuned the
  same way. (The trained initial weights are kept: η is its only meta-parameter here.)

    python scripts/ablations.py docs/results/arm_gpu --out docs/results/arm_gpu/ablations.md
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from eprop_l2l.meta.evaluate import evaluate_one_shot
from eprop_l2l.runs.evaluation import evaluation_setup
from eprop_l2l.runtime import configure_cpu

GRID = (1e-6, 1e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
FIXED = {
    "e-prop 2 (learned error module, meta-learned η)": [],
    "no inner update (meta-learned initial weights only)": ["inner.n_updates=0"],
    "error module at its initialisation": ["eval.reinit=[em_]"],
}
TUNED = {
    "e-prop 1, random feedback (η tuned)": ["error_module.kind=feedback", "inner.learn_lr=false"],
    "MAML-style BPTT step (η tuned)": ["inner.rule=bptt", "inner.learn_lr=false", "inner.fast_loop=false"],
}


def evaluate(run: str, overrides: list[str], validation: bool, n_tasks: int) -> dict:
    cfg, learner, family, meta, _, _, _ = evaluation_setup(run, overrides)
    seed = cfg.optim.validation_seed if validation else cfg.eval.seed
    summary = evaluate_one_shot(learner, meta, family, n_tasks if validation else cfg.eval.n_tasks, seed,
                                cfg.eval.batch_size)[0]
    if "log_inner_lr" in meta and learner.learn_inner_lr:
        summary["inner_lr"] = float(meta["log_inner_lr"].exp())
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", help="run directory with config.yaml and checkpoints/")
    parser.add_argument("--out", default=None, help="markdown table (default: <run>/ablations.md)")
    parser.add_argument("--validation-tasks", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    configure_cpu(args.threads)
    rows = {}
    for name, overrides in FIXED.items():
        rows[name] = (evaluate(args.run, overrides, False, 0), None)
        print(name, round(rows[name][0]["mse_cart_after"], 4), flush=True)
    for name, overrides in TUNED.items():
        scores = {lr: evaluate(args.run, [*overrides, f"inner.lr={lr}"], True, args.validation_tasks)
                  ["mse_cart_after"] for lr in GRID}
        best = min(scores, key=scores.get)
        print(name, {k: round(v, 4) for k, v in scores.items()}, "best", best, flush=True)
        rows[name] = (evaluate(args.run, [*overrides, f"inner.lr={best}"], False, 0), best)
    lines = ["| inner loop | η | MSE_cart before | MSE_cart after | MSE_motor after | RMS hand error after |",
             "|---|---|---|---|---|---|"]
    for name, (s, lr) in rows.items():
        eta = f"{lr:g} (tuned)" if lr is not None else (f"{s['inner_lr']:.3g}" if "inner_lr" in s and
                                                         "no inner update" not in name else "–")
        lines.append(f"| {name} | {eta} | {s['mse_cart_before']:.4f} ± {s['mse_cart_before_sd']:.3f} | "
                     f"**{s['mse_cart_after']:.4f}** ± {s['mse_cart_after_sd']:.3f} | "
                     f"{s['mse_motor_after']:.1f} ± {s['mse_motor_after_sd']:.1f} | "
                     f"{s['hand_rmse_after']:.3f} ± {s['hand_rmse_after_sd']:.3f} |")
    n = next(iter(rows.values()))[0]["n_tasks"]
    table = "\n".join([f"Held-out tasks: {n} (same seed for every row); mean ± sd.", "", *lines, ""])
    out = Path(args.out or Path(args.run) / "ablations.md")
    out.write_text(table)
    out.with_suffix(".json").write_text(json.dumps({k: {"summary": s, "tuned_lr": lr} for k, (s, lr) in rows.items()},
                                                   indent=2))
    print(table)


if __name__ == "__main__":
    main()
