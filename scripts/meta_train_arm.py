"""Meta-train the e-prop 2 arm learner for a wall-clock budget, then evaluate one-shot learning on held-out
tasks (interim launcher until `eprop-l2l train` lands).

    python scripts/meta_train_arm.py --preset cpu --minutes 40 --out runs/arm_cpu
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from eprop_l2l.meta.evaluate import evaluate_one_shot, write_evaluation
from eprop_l2l.meta.presets import arm_learner
from eprop_l2l.meta.trainer import meta_train, start
from eprop_l2l.runtime import configure_cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--minutes", type=float, default=40.0)
    parser.add_argument("--out", default="runs/arm_cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--eval-tasks", type=int, default=100)
    args = parser.parse_args()
    configure_cpu(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    learner, family, config = arm_learner(args.preset)
    config = dataclasses.replace(config, n_iterations=10**9, validate_every=50)
    state = start(learner, config)
    deadline = time.time() + 60 * args.minutes
    log = (out / "history.jsonl").open("w")

    def on_record(record):
        log.write(json.dumps(record) + "\n")
        log.flush()
        if record["iteration"] % 50 == 0:
            print({k: round(v, 4) if isinstance(v, float) else v for k, v in record.items()
                   if k in ("iteration", "loss") or k.startswith("val/")}, flush=True)
        if time.time() > deadline:
            raise TimeoutError

    started = time.time()
    try:
        meta_train(learner, family, config, state, callback=on_record)
    except TimeoutError:
        pass
    wall = time.time() - started
    meta = {k: v.detach() for k, v in state.meta.items()}
    tmp = out / "meta_params.pt.tmp"
    torch.save(meta, tmp)
    os.replace(tmp, out / "meta_params.pt")
    summary, per_task, example = evaluate_one_shot(learner, meta, family, n_tasks=args.eval_tasks)
    summary.update({"preset": args.preset, "iterations": state.iteration, "wall_minutes": wall / 60,
                    "inner_lr": float(meta["log_inner_lr"].exp())})
    write_evaluation(out, summary, per_task, example)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
