"""One-shot evaluation on held-out tasks: per task and aggregated (mean ± sd) errors before the update
(demonstration trial) and after it (test trial), firing rates, and the figure. What is measured and drawn is
the task family's (``metric_keys``, ``errors``, ``primary_metric``, ``one_shot_figure``: see
``task_families.base.MetaObjective``); this module only runs the held-out stream.

Held-out tasks come from their own seed stream (``seed``), never from the training generator.

A family may name subsets of its tasks (``subsets(batch) -> {name: [B] bool}``, e.g. the Scorbot's trajectories
the joint limits never clip): each task's membership goes into the per-task record under the subset's name, and
the summary states the subset's size (``n_tasks_<name>``) and its metrics (``<metric>_<when>_<name>``, with
``_sd`` and ``_median``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .learner import NOISE_SEED_OFFSET, run_learner
from .params import device as params_device


@torch.no_grad()
def evaluate_one_shot(learner, meta: dict, family, n_tasks: int = 100, seed: int = 12345, batch_size: int = 50,
                      progress: bool = False, example: bool = True):
    """Per-task metrics (lists) and aggregates over ``n_tasks`` held-out tasks, and the figure's example: the
    median task by MSE_cart after the update, rerun alone (``(batch, out, index)`` with one task, or None when
    ``example`` is false). ``progress`` shows a tqdm bar over the tasks (stderr)."""
    require_objective(family)
    from tqdm import tqdm

    generator = torch.Generator().manual_seed(seed)
    noise = torch.Generator().manual_seed(seed + NOISE_SEED_OFFSET)  # a device model's draws: apart from the tasks
    device = params_device(meta)
    per_task = {f"{k}_{when}": [] for k in family.metric_keys for when in ("before", "after")}
    members = {}  # subset name -> per-task membership
    rates_network, rates_module, starts = [], [], []
    done = 0
    with tqdm(total=n_tasks, unit="task", desc="one-shot evaluation", disable=not progress, leave=False) as bar:
        while done < n_tasks:
            size = min(batch_size, n_tasks - done)
            starts.append((done, size, generator.get_state()))
            batch = family.sample(size, generator).to(device)
            out = run_learner(learner, meta, batch, noise)
            if device.type != "cpu":
                batch, out = batch.to("cpu"), _to_cpu(out)
            for when, y in (("before", out["y_demo"]), ("after", out["y_test"])):
                for key, values in family.errors(y, batch).items():
                    per_task[f"{key}_{when}"].extend(values.tolist())
            for name, inside in (family.subsets(batch) if hasattr(family, "subsets") else {}).items():
                members.setdefault(name, []).extend(bool(v) for v in inside.tolist())
            rates_network.append(float(out["metrics"]["rate_network_hz"]))
            if "rate_module_hz" in out["metrics"]:
                rates_module.append(float(out["metrics"]["rate_module_hz"]))
            done += size
            bar.update(size)
    summary = {"n_tasks": n_tasks, "seed": seed}
    for key, values in per_task.items():
        t = torch.tensor(values, dtype=torch.float64)
        summary[key] = float(t.mean())
        summary[f"{key}_sd"] = float(t.std()) if len(values) > 1 else 0.0
    summary["rate_network_hz"] = sum(rates_network) / len(rates_network)
    if rates_module:
        summary["rate_module_hz"] = sum(rates_module) / len(rates_module)
    for name, inside in members.items():
        summary.update(subset_summary(name, per_task, inside))
    per_task.update(members)
    return summary, per_task, (_median_example(learner, meta, family, per_task, starts) if example else None)


def subset_summary(name: str, per_task: dict, inside: list[bool]) -> dict:
    """The size of the subset ``name`` (``inside``: each task's membership) and, for each per-task metric, its
    mean, sd and median (the lower middle value for an even count) over the subset's tasks; an empty subset has
    its size alone."""
    summary = {f"n_tasks_{name}": sum(inside)}
    if not any(inside):
        return summary
    for key, values in per_task.items():
        t = torch.tensor([v for v, keep in zip(values, inside, strict=True) if keep], dtype=torch.float64)
        summary[f"{key}_{name}"] = float(t.mean())
        summary[f"{key}_{name}_sd"] = float(t.std()) if len(t) > 1 else 0.0
        summary[f"{key}_{name}_median"] = float(t.median())
    return summary


def require_objective(family) -> None:
    """A family that the meta-learning loop can evaluate names its metrics and computes them per task."""
    missing = [name for name in ("metric_keys", "primary_metric", "errors") if not hasattr(family, name)]
    if missing:
        raise TypeError(f"{type(family).__name__} is not a meta-learning task family: it lacks {', '.join(missing)} "
                        "(task_families.base.MetaObjective)")


def median_task(values: list[float]) -> int:
    """Index of the median value (the lower middle one for an even count; ties by index)."""
    order = sorted(range(len(values)), key=lambda i: (values[i], i))
    return order[(len(values) - 1) // 2]


def _median_example(learner, meta: dict, family, per_task: dict, starts: list):
    """The median task (by the family's primary metric after the update) sampled again from its batch's
    generator state and run alone: the figure shows a typical task, not the first one."""
    index = median_task(per_task[f"{family.primary_metric}_after"])
    first, size, state = next(s for s in starts if s[0] <= index < s[0] + s[1])
    generator = torch.Generator()
    generator.set_state(state)
    device = params_device(meta)
    batch = family.sample(size, generator).select(slice(index - first, index - first + 1)).to(device)
    # with a device model the rerun draws its own noise: the figure shows the median task's movement on another
    # draw of the chip than the one its metric was scored on
    out = run_learner(learner, meta, batch, torch.Generator().manual_seed(index))
    if device.type != "cpu":
        batch, out = batch.to("cpu"), _to_cpu(out)
    return batch, out, index


def _to_cpu(value):
    """Tensors (also inside dicts, lists and dataclass records such as trajectories) moved to the CPU."""
    if isinstance(value, torch.Tensor):
        return value.cpu()
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):  # NamedTuple records (trajectories, states)
        return type(value)(*(_to_cpu(v) for v in value))
    if isinstance(value, list | tuple):
        return type(value)(_to_cpu(v) for v in value)
    return value


def write_evaluation(run_dir: str | Path, summary: dict, per_task: dict, example=None, family=None) -> Path:
    """``metrics.json``, ``per_task.json`` and, with an ``example`` (``(batch, out[, index])`` from
    :func:`evaluate_one_shot`) and a ``family`` that draws one (``one_shot_figure``), ``one_shot.png`` in
    ``run_dir``."""
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "per_task.json").write_text(json.dumps(per_task))
    if example is not None and hasattr(family, "one_shot_figure"):
        batch, result, *index = example
        family.one_shot_figure(out / "one_shot.png", batch, result, per_task=per_task,
                               index=index[0] if index else None)
    return out / "metrics.json"


