"""The initial inner learning rate η of each compared row, chosen by one procedure for all of them.

The inner objectives measure the demonstration's error in different units (rad/s for the motor targets, metres
for the hand path, m·s for its gradient on the outputs), so one initial η does not give every row the same
first step; the meta-learned η (learned in log space) would spend part of the budget walking there. At the
meta-parameters' initialisation (training seed ``optim.seed``), on the validation movements
(``optim.validation_seed``), this script measures each row's relative first update ‖ΔW‖/‖W‖ (ΔW of the plastic
weights, per task, averaged) and gives the η at which it equals the reference row's at the reference η: every
row starts with the same relative step. One-shot MSE_cart at that η is printed for information. Nothing is
trained; the result is the ``inner.lr`` each row starts from.

    python scripts/calibrate_inner_lr.py --reference "e-prop 2" "e-prop 2=" \\
        "e-prop 1 hand=error_module=random_feedback inner.objective=hand" --out calibration.json
"""

from __future__ import annotations

import argparse
import json
import math

import torch

from eprop_l2l.config.compose import load_config
from eprop_l2l.runs.build import build


def relative_step(overrides: list[str], n_tasks: int) -> tuple[float, object, dict, object]:
    """‖ΔW‖/‖W‖ of the first update at η = 1, averaged over tasks and plastic weights; and the model."""
    cfg = load_config(["experiment=cpu_hour", *overrides])
    learner, family, _, _ = build(cfg)
    meta = learner.init_meta_params(torch.Generator().manual_seed(cfg.optim.seed))
    batch = family.sample(n_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
    with torch.no_grad():
        _, demos = learner.adapt({**meta, "log_inner_lr": torch.tensor(0.0)}, learner.withhold(batch))
    grads = demos[0].grads
    ratios = [(grads[n].flatten(1).norm(dim=1) / meta["network"][n].norm()).mean() for n in learner.plastic]
    return float(sum(ratios) / len(ratios)), learner, meta, batch


def mse_after(learner, meta, batch, eta: float) -> float:
    with torch.no_grad():
        return float(learner.forward({**meta, "log_inner_lr": torch.tensor(math.log(eta))}, batch)
                     ["metrics"]["mse_cart_after"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", nargs="+", help="LABEL=OVERRIDES (space-separated config overrides)")
    parser.add_argument("--reference", required=True, help="the row whose first step the others match")
    parser.add_argument("--reference-lr", type=float, default=1e-2, help="its inner.lr (cpu_hour's)")
    parser.add_argument("--n-tasks", type=int, default=64)
    parser.add_argument("--out", help="JSON file to write (must not exist)")
    args = parser.parse_args(argv)
    rows = dict(spec.partition("=")[::2] for spec in args.rows)
    if args.reference not in rows:
        parser.error(f"--reference {args.reference!r} is not one of the rows: {', '.join(rows)}")
    measured = {label: relative_step(overrides.split(), args.n_tasks) for label, overrides in rows.items()}
    target = args.reference_lr * measured[args.reference][0]
    report = {}
    for label, (step, learner, meta, batch) in measured.items():
        eta = float(f"{target / step:.2g}")
        report[label] = {"overrides": rows[label], "relative_step_at_lr_1": step, "inner_lr": eta,
                         "mse_cart_before": mse_after(learner, meta, batch, 1e-30),
                         "mse_cart_after_at_init": mse_after(learner, meta, batch, eta)}
        print(f"{label}: inner.lr={eta:g} (relative step at η=1: {step:.3g}; MSE_cart at initialisation "
              f"{report[label]['mse_cart_before']:.4f} → {report[label]['mse_cart_after_at_init']:.4f})", flush=True)
    if args.out:
        with open(args.out, "x") as f:  # never overwrites
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
