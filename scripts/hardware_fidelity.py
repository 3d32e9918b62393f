"""One-shot error of a trained model's update at Loihi precision vs float, on held-out movements, for one or
more runs (e.g. a float-trained run and its hardware-aware fine-tuning), with the step-wise engine.

    python scripts/hardware_fidelity.py docs/results/arm_gpu runs/hw_finetune --tasks 20 --out result.json

The float reference of every ratio is the FIRST run's float update on the same movements.
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from eprop_l2l.hardware.export import file_weights
from eprop_l2l.hardware.fidelity import measure
from eprop_l2l.hardware.rule import describe
from eprop_l2l.inner_loop.fixed_point import number_format
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.evaluation import evaluation_setup
from eprop_l2l.runtime import configure_cpu


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--calibration-tasks", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    configure_cpu(args.threads)
    results, reference = {}, None
    for run in args.runs:
        cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(run)
        meta = tree_map(lambda v: v.detach().cpu(), meta)
        rule, weights = describe(learner, file_weights(meta))
        batch = family.sample(args.tasks, torch.Generator().manual_seed(cfg.eval.seed))
        calibration = family.sample(args.calibration_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
        report, _ = measure(rule, weights, batch, calibration, {"loihi": number_format("loihi")}, learner, meta)
        reference = reference if reference is not None else report["float"]["mse_cart_after"]
        entry = {"checkpoint": str(checkpoint), "iteration": iteration, "precision_trained": cfg.inner.precision,
                 "mse_cart_before": report["float"]["mse_cart_before"],
                 "mse_cart_after_float": report["float"]["mse_cart_after"],
                 "mse_cart_after_loihi": report["loihi"]["mse_cart_after"],
                 "loihi_over_own_float": report["loihi"]["mse_cart_ratio_to_float"],
                 "loihi_over_first_run_float": report["loihi"]["mse_cart_after"] / reference,
                 "dw_correlation": {n: report["loihi"][n]["dw_correlation"] for n in ("w_in", "w_rec")}}
        results[run] = entry
        print(json.dumps({run: entry}, indent=1), flush=True)
    if args.out:
        with open(args.out, "w") as handle:
            json.dump({"tasks": args.tasks, "runs": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
