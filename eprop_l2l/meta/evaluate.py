"""One-shot evaluation on held-out arm tasks: per task and aggregated (mean ± sd) errors before the update
(demonstration trial) and after it (test trial), firing rates, and figures.

Held-out tasks come from their own seed stream (``seed``), never from the training generator.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..cells.base import Params
from .objectives import arm_errors, produced_hand

METRIC_KEYS = ("mse_cart", "mse_motor", "hand_rmse")


@torch.no_grad()
def evaluate_one_shot(learner, meta: Params, family, n_tasks: int = 100, seed: int = 12345, batch_size: int = 50):
    """Per-task metrics (lists) and aggregates over ``n_tasks`` held-out tasks."""
    generator = torch.Generator().manual_seed(seed)
    device = next(iter(meta.values())).device
    per_task = {f"{k}_{when}": [] for k in METRIC_KEYS for when in ("before", "after")}
    rates_network, rates_module, example = [], [], None
    done = 0
    while done < n_tasks:
        size = min(batch_size, n_tasks - done)
        batch = family.sample(size, generator).to(device)
        out = learner.forward(meta, batch)
        if device.type != "cpu":
            batch, out = batch.to("cpu"), _to_cpu(out)
        for when, y in (("before", out["y_demo"]), ("after", out["y_test"])):
            for key, values in arm_errors(y, batch).items():
                per_task[f"{key}_{when}"].extend(values.tolist())
        rates_network.append(float(out["metrics"]["rate_network_hz"]))
        if "rate_module_hz" in out["metrics"]:
            rates_module.append(float(out["metrics"]["rate_module_hz"]))
        if example is None:
            example = (batch, out)
        done += size
    summary = {"n_tasks": n_tasks, "seed": seed}
    for key, values in per_task.items():
        t = torch.tensor(values, dtype=torch.float64)
        summary[key] = float(t.mean())
        summary[f"{key}_sd"] = float(t.std()) if len(values) > 1 else 0.0
    summary["rate_network_hz"] = sum(rates_network) / len(rates_network)
    if rates_module:
        summary["rate_module_hz"] = sum(rates_module) / len(rates_module)
    return summary, per_task, example


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


def write_evaluation(run_dir: str | Path, summary: dict, per_task: dict, example=None) -> Path:
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps(summary, indent=2))
    (out / "per_task.json").write_text(json.dumps(per_task))
    if example is not None:
        figure_one_shot(out / "one_shot.png", *example)
    return out / "metrics.json"


def figure_one_shot(path: Path, batch, out, task: int = 0) -> None:
    """Target vs produced hand path before/after, joint velocities, rasters of both networks, learning signals;
    time axes in ms (step · ``batch.dt_ms``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = batch.extra["hand"][task].numpy()
    before, after = produced_hand(out["y_demo"][task], batch).numpy(), produced_hand(out["y_test"][task], batch).numpy()
    dt_ms = batch.dt_ms
    t_ms = (torch.arange(batch.n_steps) * dt_ms).numpy()
    demo = out["demos"][0] if out["demos"] else None
    fig, axes = plt.subplots(2, 3, figsize=(14, 8))
    ax = axes[0, 0]
    ax.plot(target[:, 0], target[:, 1], "k", lw=2, label="target")
    ax.plot(before[:, 0], before[:, 1], color="tab:gray", label="before update (demonstration)")
    ax.plot(after[:, 0], after[:, 1], color="tab:red", label="after one update (test)")
    ax.set_aspect("equal")
    ax.set_title("hand path")
    ax.legend(fontsize=7)
    ax = axes[0, 1]
    for k, color in ((0, "tab:blue"), (1, "tab:orange")):
        ax.plot(t_ms, batch.targets[task, :, k].numpy(), color=color, lw=2, alpha=0.5, label=f"target ω{k + 1}")
        ax.plot(t_ms, out["y_test"][task, :, k].numpy(), color=color, lw=1, label=f"produced ω{k + 1} (test)")
    ax.set_title("joint velocities (rad/s)")
    ax.set_xlabel("time (ms)")
    ax.legend(fontsize=7)
    ax = axes[0, 2]
    if demo is not None and demo.signals is not None:
        signals = demo.signals[task].T.numpy()
        ax.imshow(signals, aspect="auto", cmap="RdBu_r", interpolation="nearest",
                  extent=(0.0, batch.n_steps * dt_ms, signals.shape[0], 0))
    ax.set_title("learning signals L (demonstration)")
    ax.set_xlabel("time (ms)")
    rasters = [("learning network, test trial", out["test_trajectory"].outputs[task])]
    if demo is not None and demo.source_trajectory is not None:
        rasters.append(("error module, demonstration", demo.source_trajectory.outputs[task]))
    for ax, (title, spikes) in zip(axes[1], rasters, strict=False):
        events = torch.nonzero(spikes).numpy()
        ax.scatter(events[:, 0] * dt_ms, events[:, 1], s=0.5, c="k")
        ax.set_title(title)
        ax.set_xlabel("time (ms)")
    axes[1, 2].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
