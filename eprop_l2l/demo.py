"""The demo run by ``make demo``: e-prop 1 learns a sum-of-sines pattern (Bellec et al. 2020, Fig. S7).

Trains the preset of :func:`eprop_l2l.inner_loop.presets.pattern_generation`, then writes into the run
directory ``metrics.json`` (normalised MSE before/after, firing rate, wall time) and ``pattern_generation.png``
(target vs output before and after learning, spike raster, learning curve). ``eprop-l2l demo-eprop1`` runs it
(:mod:`eprop_l2l.commands.demo`).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from .inner_loop.presets import pattern_generation, train_setup
from .runtime import configure_cpu
from .units import rate_hz


def _trial(setup, batch):
    with torch.no_grad():
        trajectory, y = setup.network.run(setup.params, batch.inputs)
    return trajectory.outputs, y


def run(out_dir: str | Path = "runs/demo", feedback: str = "random", n_iterations: int = 150, seed: int = 0,
        progress: bool = True) -> dict:
    configure_cpu(threads=1)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    setup = pattern_generation(feedback=feedback, seed=seed, n_iterations=n_iterations)
    batch = setup.task
    z_before, y_before = _trial(setup, batch)

    started = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_iterations, desc=f"e-prop 1 ({feedback} feedback)", unit="it", mininterval=1.0)

    def on_iteration(record):
        if bar is not None:
            bar.update(1)
            bar.set_postfix(nmse=f"{record['nmse']:.3f}")

    history = train_setup(setup, callback=on_iteration)
    if bar is not None:
        bar.close()
    wall = time.perf_counter() - started
    z_after, y_after = _trial(setup, batch)
    dt_ms = setup.network.cell.spec.dt_ms
    metrics = {
        "task": "pattern generation (sum of 4 sines, 1 s), e-prop 1",
        "feedback": feedback,
        "n_iterations": n_iterations,
        "nmse_first_iteration": history[0]["nmse"],
        "nmse_last_iteration": history[-1]["nmse"],
        "firing_rate_hz": rate_hz(float(z_after.mean()), dt_ms),
        "wall_time_s": wall,
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    (out / "history.json").write_text(json.dumps(history))
    _figure(out / "pattern_generation.png", batch, y_before, y_after, z_after, history, feedback, dt_ms)
    return metrics


def _figure(path: Path, batch, y_before, y_after, z_after, history, feedback: str, dt_ms: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(8, 8), gridspec_kw={"height_ratios": [2, 2, 1.3]})
    t = (torch.arange(batch.targets.shape[1]) * dt_ms).numpy()  # ms
    axes[0].plot(t, batch.targets[0, :, 0].numpy(), "k", lw=2, label="target")
    axes[0].plot(t, y_before[0, :, 0].numpy(), color="tab:gray", lw=1, label="before learning")
    axes[0].plot(t, y_after[0, :, 0].numpy(), color="tab:red", lw=1.5, label="after learning")
    axes[0].set_ylabel("readout")
    axes[0].legend(loc="upper right", fontsize=8)
    axes[0].set_title(f"e-prop 1 ({feedback} feedback): pattern generation")
    spikes = torch.nonzero(z_after[0]).numpy()
    axes[1].scatter(spikes[:, 0] * dt_ms, spikes[:, 1], s=1, c="k")
    axes[1].set_ylabel("neuron")
    axes[1].set_xlabel("time (ms)")
    axes[1].set_xlim(0, len(t) * dt_ms)
    axes[2].semilogy([h["nmse"] for h in history])
    axes[2].set_xlabel("iteration")
    axes[2].set_ylabel("normalised MSE")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
