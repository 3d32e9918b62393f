"""What the learning engine's precision costs the one-shot error, and which approximation costs it.

For each run: the exported rule (``hardware.rule.describe``) on held-out movements of the evaluation seed, its
float update, and its Loihi-format emulation (``hardware.engine.FixedArithmetic``, scales calibrated on
validation movements) with each approximation switched off in turn, the others kept at Loihi's: the 9-bit tag,
the 8-bit third factor ψL, the product's 7 fractional bits, the 7-bit traces, the 8-bit weights, and the
rounding (``rounding: off`` keeps every width and saturation but no value is rounded). Then the calibration
choices the engine leaves free (the quantiles that set the exponents) and nearest rounding. Each variant runs
with several seeds of the stochastic rounding; reported: MSE_cart after the update over the float update's
(ratio of the means over the movements), per seed, and the ΔW correlation with the float update.

    python scripts/fixed_point_ablation.py docs/results/arm_gpu --tasks 50 --seeds 3 --out ablation.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import torch

from eprop_l2l.hardware.engine import FixedArithmetic, FloatArithmetic
from eprop_l2l.hardware.export import file_weights
from eprop_l2l.hardware.fidelity import calibrate_rule, correlation, demonstrate, one_shot_errors
from eprop_l2l.hardware.rule import build_model, describe
from eprop_l2l.inner_loop.fixed_point import LOIHI
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.evaluation import evaluation_setup
from eprop_l2l.runtime import configure_cpu

WIDE_BITS = 30  # "switched off": wide enough that the approximation no longer matters
# one approximation of the Loihi format switched off at a time (the others Loihi's), then the free choices
VARIANTS = {
    "loihi": {},
    "tag: wide (no 9-bit tag)": {"tag_bits": 2 * WIDE_BITS, "tag_quantile": 1.0},
    "psi*L: wide (no 8-bit third factor)": {"y_bits": WIDE_BITS},
    "product: wide fraction (no 7-bit truncation)": {"product_frac_bits": WIDE_BITS},
    "traces: wide (no 7-bit trace)": {"trace_bits": WIDE_BITS},
    "weights: wide (no 8-bit mantissa / 9-bit register)": {"weight_bits": WIDE_BITS, "weight_register_bits":
                                                            WIDE_BITS + 1, "weight_quantile": 1.0},
    "rounding: off": {},
    "rounding: nearest": {"rounding": "nearest"},
    "calibration: tag quantile 0.99": {"tag_quantile": 0.99},
    "calibration: tag quantile 0.9999": {"tag_quantile": 0.9999},
    "calibration: tag quantile 1 (max)": {"tag_quantile": 1.0},
    "calibration: psi*L quantile 0.999": {"signal_quantile": 0.999},
}


class UnroundedArithmetic(FixedArithmetic):
    """The Loihi format's widths and saturations without any rounding (the ablation's "rounding: off")."""

    def _round(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        return x


def measure_run(run: str, tasks: int, calibration_tasks: int, seeds: int, variants: list[str]) -> dict:
    cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(run)
    meta = tree_map(lambda v: v.detach().cpu(), meta)
    rule, weights = describe(learner, file_weights(meta))
    model = build_model(rule)
    batch = family.sample(tasks, torch.Generator().manual_seed(cfg.eval.seed))
    calibration = family.sample(calibration_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
    float_run = demonstrate(rule, weights, batch, FloatArithmetic(rule), model)
    float_mse = one_shot_errors(rule, weights, float_run.weights, batch, model)["mse_cart"]
    before = one_shot_errors(rule, weights, float_run.initial, batch, model)["mse_cart"]
    float_dw = {n: -rule.inner_lr * float_run.tags[n].double() for n in rule.plastic_names}
    out = {"checkpoint": str(checkpoint), "iteration": iteration, "rule": "e-prop 1" if rule.is_feedback else
           "e-prop 2", "tasks": tasks, "calibration_tasks": calibration_tasks,
           "mse_cart_before": float(before.mean()), "mse_cart_float": float(float_mse.mean()), "variants": {}}
    for name in variants:
        fmt = dataclasses.replace(LOIHI, **VARIANTS[name])
        scales = calibrate_rule(rule, weights, calibration, fmt, model)
        kind = UnroundedArithmetic if name == "rounding: off" else FixedArithmetic
        entry = {"format": fmt.to_dict(), "ratio": [], "dw_correlation": []}
        for seed in range(seeds if fmt.rounding == "stochastic" and kind is FixedArithmetic else 1):
            start = time.perf_counter()
            fixed = demonstrate(rule, weights, batch, kind(rule, fmt, scales, torch.Generator().manual_seed(seed)),
                                model)
            mse = one_shot_errors(rule, weights, fixed.weights, batch, model)["mse_cart"]
            entry["ratio"].append(float(mse.mean() / float_mse.mean()))
            entry["dw_correlation"].append({n: correlation(fixed.weights[n] - fixed.initial[n], float_dw[n])
                                            for n in rule.plastic_names})
            print(f"{run} | {name} | seed {seed}: MSE_cart ratio {entry['ratio'][-1]:.3f}, ΔW corr "
                  + " / ".join(f"{v:.3f}" for v in entry["dw_correlation"][-1].values())
                  + f" ({time.perf_counter() - start:.0f} s)", flush=True)
        entry["ratio_mean"] = sum(entry["ratio"]) / len(entry["ratio"])
        out["variants"][name] = entry
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--calibration-tasks", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", default=None, help="comma-separated names of VARIANTS (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants is None else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r} (choose from {', '.join(VARIANTS)})")
    configure_cpu(args.threads)
    results = {run: measure_run(run, args.tasks, args.calibration_tasks, args.seeds, variants) for run in args.runs}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
