"""Meta-train the e-prop 2 arm learner from a preset for a wall-clock budget (resumable: run it again on the
same --out to continue from the latest checkpoint), then evaluate one-shot learning on held-out tasks.
Needs only torch (+ matplotlib for the figure), so it runs on a bare GPU machine; `eprop-l2l train` is the
configurable front end.

    python scripts/meta_train_arm.py --preset cpu --minutes 40 --out runs/arm_cpu
    python scripts/meta_train_arm.py --preset paper --device cuda --minutes 8 --out runs/arm_paper
"""

from __future__ import annotations

import argparse
import dataclasses
import json

import torch

from eprop_l2l.meta.evaluate import evaluate_one_shot, write_evaluation
from eprop_l2l.meta.presets import PRESETS, arm_learner
from eprop_l2l.runs.session import SessionOptions, run_session
from eprop_l2l.runtime import configure_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu", choices=tuple(PRESETS))
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--iterations", type=int, default=10**9)
    parser.add_argument("--out", default="runs/arm_cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--keep", type=int, default=3, help="checkpoints kept")
    parser.add_argument("--eval-tasks", type=int, default=100)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    configure_cpu(args.threads)
    learner, family, config = arm_learner(args.preset)
    config = dataclasses.replace(config, n_iterations=args.iterations, validate_every=50)

    def log(record):
        if record["iteration"] % 50 == 0:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()
                   if k in ("iteration", "loss", "seconds") or k.startswith("val/")}, flush=True)

    options = SessionOptions(checkpoint_every=args.checkpoint_every, keep=args.keep, minutes=args.minutes,
                             progress=not args.no_progress)
    state, reason = run_session(learner, family, config, args.out, options, device=args.device, log=log)
    meta = {k: v.detach() for k, v in state.meta.items()}
    summary, per_task, example = evaluate_one_shot(learner, meta, family, n_tasks=args.eval_tasks)
    seconds = sum(r.get("seconds", 0.0) for r in state.history)
    summary.update({"preset": args.preset, "device": str(torch.device(args.device)), "iterations": state.iteration,
                    "training_minutes": seconds / 60, "stopped_by": reason,
                    "inner_lr": float(meta["log_inner_lr"].exp())})
    write_evaluation(args.out, summary, per_task, example)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
