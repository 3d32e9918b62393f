"""Copy the small result files of a training run into the repository (``docs/results/...``): its config,
metrics, per-movement errors, final checkpoint, its evaluations' metrics and per-movement errors, and the
validation curve against iterations, cumulative one-thread CPU minutes and wall-clock seconds (from
``history.jsonl``, which is too large to commit). The checkpoint keeps everything a resumed or re-evaluated
run needs except the per-iteration history, which is folded into one record of the totals (iterations, CPU and
wall seconds: the budget clock stays exact) with a fresh content digest; ~6 MB become ~2 MB. The destination
must not exist; it is staged and renamed.

    python scripts/collect_run.py /work/runs/maml_hand_s0 docs/results/comparison/maml_hand/seed0
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

from eprop_l2l.runs.checkpoint import content_digest, load_checkpoint

# the run's manifest is not copied: it lists the original checkpoint's SHA-256, not the slim one's
FILES = ("config.yaml", "metrics.json", "per_task.json", "one_shot.png", "training_curves.png")


def slim_checkpoint(src: Path, dst: Path) -> None:
    data = load_checkpoint(src)
    history = data["history"]
    data["history"] = [{"iteration": history[-1]["iteration"] if history else -1, "folded_records": len(history),
                        "cpu_seconds": sum(r.get("cpu_seconds", 0.0) for r in history),
                        "seconds": sum(r.get("seconds", 0.0) for r in history)}]
    data["digest"] = content_digest(data)
    torch.save(data, dst)
    load_checkpoint(dst)  # the copy passes every integrity check


def validation_curve(history: Path) -> list[dict]:
    rows, cpu, wall = [], 0.0, 0.0
    with history.open() as f:
        for line in f:
            record = json.loads(line)
            cpu += record.get("cpu_seconds", 0.0)
            wall += record.get("seconds", 0.0)
            if any(k.startswith("val/") for k in record):
                rows.append({"iteration": record["iteration"], "cpu_minutes": cpu / 60, "wall_seconds": wall,
                             "lr": record.get("lr"), "inner_lr": record.get("inner_lr"),
                             **{k: v for k, v in record.items() if k.startswith("val/")}})
    return rows


def collect(src: Path, dst: Path) -> None:
    if dst.exists():
        raise SystemExit(f"collect_run: {dst} exists; nothing is overwritten")
    if not (src / "history.jsonl").is_file():
        raise SystemExit(f"collect_run: {src}/history.jsonl: not a training run")
    stage = dst.with_name(dst.name + ".partial")
    if stage.exists():
        raise SystemExit(f"collect_run: {stage} exists (an interrupted collection?); remove it first")
    stage.mkdir(parents=True)
    for name in FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, stage / name)
    checkpoints = sorted((src / "checkpoints").glob("ckpt_*.pt"))
    if checkpoints:
        (stage / "checkpoints").mkdir()
        slim_checkpoint(checkpoints[-1], stage / "checkpoints" / checkpoints[-1].name)
    with (stage / "validation_history.jsonl").open("w") as f:
        for row in validation_curve(src / "history.jsonl"):
            f.write(json.dumps(row) + "\n")
    for evaluation in sorted((src / "evaluations").glob("*/metrics.json")):
        target = stage / "evaluations" / evaluation.parent.name
        target.mkdir(parents=True)
        for name in ("metrics.json", "per_task.json", "config.yaml"):
            if (evaluation.parent / name).is_file():
                shutil.copy2(evaluation.parent / name, target / name)
    stage.rename(dst)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", type=Path)
    parser.add_argument("dst", type=Path)
    args = parser.parse_args(argv)
    collect(args.src, args.dst)
    print(f"collected {args.src} -> {args.dst}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
