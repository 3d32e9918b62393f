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
    "calibration: psi*L quantile 0.99": {"signal_quantile": 0.99},
    "calibration: psi*L quantile 0.95": {"signal_quantile": 0.95},
}


class UnroundedArithmetic(FixedArithmetic):
    """The Loihi format's widths and saturations without any rounding (the ablation's "rounding: off")."""

    def _round(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        return x


def one_shot(rule, weights, chunks, arithmetic, model) -> tuple[torch.Tensor, torch.Tensor, dict, torch.Tensor]:
    """Per-task MSE_cart before and after the update, ΔW and the demonstrations' spikes, over the movements in
    ``chunks`` (a few tasks at a time: the per-task weights and tags of 50 movements of a 400-neuron model do not
    fit this machine at once)."""
    before, after, dw, spikes = [], [], {n: [] for n in rule.plastic_names}, []
    for chunk in chunks:
        run = demonstrate(rule, weights, chunk, arithmetic, model)
        spikes.append(run.spikes)
        before.append(one_shot_errors(rule, weights, run.initial, chunk, model)["mse_cart"])
        after.append(one_shot_errors(rule, weights, run.weights, chunk, model)["mse_cart"])
        for n in rule.plastic_names:  # float: −η·tag, not the difference of float32 weights (it cancels ΔW's digits)
            exact = isinstance(arithmetic, FloatArithmetic)
            dw[n].append(-rule.inner_lr * run.tags[n].double() if exact else run.weights[n] - run.initial[n])
    return torch.cat(before), torch.cat(after), {n: torch.cat(v) for n, v in dw.items()}, torch.cat(spikes)


def measure_run(run: str, tasks: int, calibration_tasks: int, seeds: range, variants: list[str], chunk: int) -> dict:
    cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(run)
    meta = tree_map(lambda v: v.detach().cpu(), meta)
    rule, weights = describe(learner, file_weights(meta))
    model = build_model(rule)
    batch = family.sample(tasks, torch.Generator().manual_seed(cfg.eval.seed))
    chunks = [batch.select(slice(i, i + chunk)) for i in range(0, tasks, chunk)]
    calibration = family.sample(calibration_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
    before, float_mse, float_dw, float_spikes = one_shot(rule, weights, chunks, FloatArithmetic(rule), model)
    out = {"checkpoint": str(checkpoint), "iteration": iteration, "rule": "e-prop 1" if rule.is_feedback else
           "e-prop 2", "tasks": tasks, "calibration_tasks": calibration_tasks,
           "mse_cart_before": float(before.mean()), "mse_cart_float": float(float_mse.mean()), "variants": {}}
    for name in variants:
        fmt = dataclasses.replace(LOIHI, **VARIANTS[name])
        scales = calibrate_rule(rule, weights, calibration, fmt, model)
        kind = UnroundedArithmetic if name == "rounding: off" else FixedArithmetic
        entry = {"format": fmt.to_dict(), "ratio": [], "dw_correlation": [], "spike_agreement_demo": []}
        for seed in (seeds if fmt.rounding == "stochastic" and kind is FixedArithmetic else seeds[:1]):
            start = time.perf_counter()
            arithmetic = kind(rule, fmt, scales, torch.Generator().manual_seed(seed))
            _, mse, dw, spikes = one_shot(rule, weights, chunks, arithmetic, model)
            entry["ratio"].append(float(mse.mean() / float_mse.mean()))
            entry["spike_agreement_demo"].append(float((spikes == float_spikes).double().mean()))
            entry["dw_correlation"].append({n: correlation(dw[n], float_dw[n]) for n in rule.plastic_names})
            print(f"{run} | {name} | seed {seed}: MSE_cart ratio {entry['ratio'][-1]:.3f}, ΔW corr "
                  + " / ".join(f"{v:.3f}" for v in entry["dw_correlation"][-1].values())
                  + f", spikes {entry['spike_agreement_demo'][-1]:.4f} ({time.perf_counter() - start:.0f} s)",
                  flush=True)
        entry["ratio_mean"] = sum(entry["ratio"]) / len(entry["ratio"])
        out["variants"][name] = entry
    return out


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--calibration-tasks", type=int, default=10)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--first-seed", type=int, default=0, help="seeds of the rounding: first-seed, first-seed+1, …")
    parser.add_argument("--variants", default=None, help="comma-separated names of VARIANTS (default: all)")
    parser.add_argument("--chunk", type=int, default=10, help="movements run at once (memory)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    variants = list(VARIANTS) if args.variants is None else args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"--variants: unknown {unknown[0]!r} (choose from {', '.join(VARIANTS)})")
    configure_cpu(args.threads)
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    results = {run: measure_run(run, args.tasks, args.calibration_tasks, seeds, variants, args.chunk)
               for run in args.runs}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(results, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
