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
from eprop_l2l.inner_loop.fixed_point import LOIHI, movement_generators
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.evaluation import evaluation_setup
from eprop_l2l.runtime import configure_cpu


class UnroundedArithmetic(FixedArithmetic):
    """The Loihi format's widths and saturations without rounding at the sites in ``off`` (all: the ablation's
    "rounding: off"): ``trace`` (the decay), ``y`` (the third factor), ``tag`` (each step's accumulation),
    ``apply`` (the update into the weight register)."""

    SITES = ("trace", "y", "tag", "apply")

    def __init__(self, *args, off=SITES, **kwargs):
        super().__init__(*args, **kwargs)
        self.off, self.site = frozenset(off), None

    def _round(self, x: torch.Tensor, shared: bool) -> torch.Tensor:
        return x if self.site in self.off else super()._round(x, shared)

    def _at(self, site, method, *args):
        self.site = site
        try:
            return method(*args)
        finally:
            self.site = None

    def trace_step(self, *args):
        return self._at("trace", super().trace_step, *args)

    def third_factor(self, *args):
        return self._at("y", super().third_factor, *args)

    def accumulate(self, *args):
        return self._at("tag", super().accumulate, *args)

    def apply(self, *args):
        return self._at("apply", super().apply, *args)


WIDE_BITS = 30  # "switched off": wide enough that the approximation no longer matters
# one approximation of the Loihi format switched off at a time (the others Loihi's), then the free choices
VARIANTS = {
    "loihi": {},
    "tag: wide (no 9-bit tag)": {"format": {"tag_bits": 2 * WIDE_BITS, "tag_quantile": 1.0}},
    "psi*L: wide (no 8-bit third factor)": {"format": {"y_bits": WIDE_BITS}},
    "psi*L: split y2 + 2^-8 y3 (two 8-bit registers)": {"format": {"y_split": True}},
    "product: wide fraction (no 7-bit truncation)": {"format": {"product_frac_bits": WIDE_BITS}},
    "traces: wide (no 7-bit trace)": {"format": {"trace_bits": WIDE_BITS}},
    "weights: wide (no 8-bit mantissa / 9-bit register)": {"format": {"weight_bits": WIDE_BITS, "weight_register_bits":
                                                                      WIDE_BITS + 1, "weight_quantile": 1.0}},
    "rounding: off": {"unrounded": UnroundedArithmetic.SITES},
    "rounding: off at the traces' decay": {"unrounded": ("trace",)},
    "rounding: off at the third factor": {"unrounded": ("y",)},
    "rounding: off at the tag's accumulation": {"unrounded": ("tag",)},
    "rounding: off at the update": {"unrounded": ("apply",)},
    "rounding: one draw per synapse (not Lava's one per step)": {"format": {"shared_draw": False}},
    "psi*L split + one draw per synapse": {"format": {"y_split": True, "shared_draw": False}},
    "psi*L split + tag rounding off": {"format": {"y_split": True}, "unrounded": ("tag",)},
    "psi*L split + rounding off": {"format": {"y_split": True}, "unrounded": UnroundedArithmetic.SITES},
    "rounding: nearest": {"format": {"rounding": "nearest"}},
    "calibration: tag quantile 0.99": {"format": {"tag_quantile": 0.99}},
    "calibration: tag quantile 0.9999": {"format": {"tag_quantile": 0.9999}},
    "calibration: tag quantile 1 (max)": {"format": {"tag_quantile": 1.0}},
    "calibration: psi*L quantile 0.999": {"format": {"signal_quantile": 0.999}},
    "calibration: psi*L quantile 0.99": {"format": {"signal_quantile": 0.99}},
    "calibration: psi*L quantile 0.95": {"format": {"signal_quantile": 0.95}},
    # e-prop 2: the error module at Loihi precision (hardware/fixed_module.py), alone and with the rule's formats
    "module: Loihi precision (rule float)": {"rule": "float", "module": {}},
    "module: Loihi precision + rule loihi": {"module": {}},
    "module: Loihi precision + rule loihi + psi*L split": {"format": {"y_split": True}, "module": {}},
}


def one_shot(rule, weights, chunks, arithmetic, model, family, generators=None) -> tuple:
    """Per-task errors before and after the update, ΔW and the demonstrations' spikes, over the movements in
    ``chunks`` (a few tasks at a time: the per-task weights and tags of 50 movements of a 400-neuron model are
    large); ``generators``: one rounding stream per movement, so that the chunk size changes nothing."""
    before, after, dw, spikes = [], [], {n: [] for n in rule.plastic_names}, []
    start = 0
    for chunk in chunks:
        size = chunk.inputs.shape[0]
        if generators is not None:
            arithmetic.generator = generators[start:start + size]
        start += size
        run = demonstrate(rule, weights, chunk, arithmetic, model)
        spikes.append(run.spikes)
        before.append(one_shot_errors(rule, weights, run.initial, chunk, family, model))
        after.append(one_shot_errors(rule, weights, run.weights, chunk, family, model))
        for n in rule.plastic_names:  # float: −η·tag, not the difference of float32 weights (it cancels ΔW's digits)
            exact = isinstance(arithmetic, FloatArithmetic)
            dw[n].append(-rule.inner_lr * run.tags[n].double() if exact else run.weights[n] - run.initial[n])
    return torch.cat(before), torch.cat(after), {n: torch.cat(v) for n, v in dw.items()}, torch.cat(spikes)


def arithmetic_of(name: str, rule, weights, fmt, scales, calibration, model, seed: int):
    """The arithmetic of a variant: the learner's rule in ``fmt`` (float for the module-only variants), and the
    error module at its Loihi-precision format where the variant names it."""
    spec = VARIANTS[name]
    if spec.get("rule") == "float":
        arithmetic = FloatArithmetic(rule)
    elif "unrounded" in spec:
        arithmetic = UnroundedArithmetic(rule, fmt, scales, torch.Generator().manual_seed(seed), off=spec["unrounded"])
    else:
        arithmetic = FixedArithmetic(rule, fmt, scales, torch.Generator().manual_seed(seed))
    module = spec.get("module")
    if module is not None:
        from eprop_l2l.hardware.fixed_module import attach_fixed_module

        attach_fixed_module(arithmetic, rule, weights, calibration, model, **module)
    return arithmetic


def measure_run(run: str, tasks: int, calibration_tasks: int, seeds: range, variants: list[str], chunk: int) -> dict:
    cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(run)
    meta = tree_map(lambda v: v.detach().cpu(), meta)
    rule, weights = describe(learner, file_weights(meta))
    model = build_model(rule)
    metric = family.primary_metric
    batch = family.sample(tasks, torch.Generator().manual_seed(cfg.eval.seed))
    chunks = [batch.select(slice(i, i + chunk)) for i in range(0, tasks, chunk)]
    calibration = family.sample(calibration_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
    start = time.perf_counter()
    before, float_mse, float_dw, float_spikes = one_shot(rule, weights, chunks, FloatArithmetic(rule), model, family)
    print(f"{run} | float: {metric} {float(before.mean()):.5f} -> {float(float_mse.mean()):.5f} "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    out = {"checkpoint": str(checkpoint), "iteration": iteration, "rule": "e-prop 1" if rule.is_feedback else
           "e-prop 2", "tasks": tasks, "calibration_tasks": calibration_tasks, "metric": metric,
           f"{metric}_before": float(before.mean()), f"{metric}_float": float(float_mse.mean()), "variants": {}}
    for name in variants:
        spec = VARIANTS[name]
        if "module" in spec and rule.is_feedback:
            continue  # e-prop 1 has no error module
        fmt = dataclasses.replace(LOIHI, **spec.get("format", {}))
        scales = calibrate_rule(rule, weights, calibration, fmt, model)
        stochastic = (fmt.rounding == "stochastic" and spec.get("rule") != "float"
                      and set(spec.get("unrounded", ())) != set(UnroundedArithmetic.SITES))
        entry = {"format": fmt.to_dict(), "ratio": [], "dw_correlation": [], "spike_agreement_demo": []}
        for seed in (seeds if stochastic else seeds[:1]):
            start = time.perf_counter()
            arithmetic = arithmetic_of(name, rule, weights, fmt, scales, calibration, model, seed)
            generators = movement_generators(seed, range(tasks)) if stochastic else None
            _, mse, dw, spikes = one_shot(rule, weights, chunks, arithmetic, model, family, generators)
            entry["ratio"].append(float(mse.mean() / float_mse.mean()))
            entry["spike_agreement_demo"].append(float((spikes == float_spikes).double().mean()))
            entry["dw_correlation"].append({n: correlation(dw[n], float_dw[n]) for n in rule.plastic_names})
            print(f"{run} | {name} | seed {seed}: {metric} ratio {entry['ratio'][-1]:.3f}, ΔW corr "
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
