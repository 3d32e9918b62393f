"""The arm's one-shot figure: per-task MSE_cart before vs after (paired), the example task's hand path and
joint velocities, rasters of both trials and of the error module, and the learning signals. ``figure_data``
returns what the panels show (tests check it, not pixels)."""

from __future__ import annotations

from pathlib import Path

import torch

from .arm_objective import arm_errors, produced_hand


def _events(spikes: torch.Tensor, dt_ms: float):
    """Spike events ``[n, 2]`` as (time in ms, neuron) of a ``[T, N]`` raster."""
    events = torch.nonzero(spikes).to(torch.float64)
    events[:, 0] *= dt_ms
    return events.numpy()


def figure_data(batch, out, task: int = 0, per_task: dict | None = None, index: int | None = None) -> dict:
    """What :func:`figure_one_shot` plots, as arrays (time in ms, hand in arm units, ω in rad/s); a panel without
    data carries a note saying why (an ablation without an inner update, without an error module, ...)."""
    dt_ms = batch.dt_ms
    demos = out["demos"]
    demo = demos[0] if demos else None
    one = batch.select(slice(task, task + 1))
    errors = {when: {k: float(v[0]) for k, v in arm_errors(out[key][task : task + 1], one).items()}
              for when, key in (("before", "y_demo"), ("after", "y_test"))}
    data = {
        "dt_ms": dt_ms,
        "time_ms": (torch.arange(batch.n_steps, dtype=torch.float64) * dt_ms).numpy(),
        "task": index if index is not None else task,
        "errors": errors,
        "hand": {"target": batch.extra["hand"][task].numpy(),
                 "demonstration": produced_hand(out["y_demo"][task], batch).numpy(),
                 "after": produced_hand(out["y_test"][task], batch).numpy(),
                 "base": (0.0, 0.0)},
        "joint_velocities": {"target": batch.targets[task].numpy(), "before": out["y_demo"][task].numpy(),
                             "after": out["y_test"][task].numpy()},
        "raster_test": _events(out["test_trajectory"].outputs[task], dt_ms),
        "raster_demonstration": None, "raster_error_module": None, "signals": None, "signal_limit": None,
        "notes": {},
    }
    if per_task is not None:
        data["paired"] = {"before": list(per_task["mse_cart_before"]), "after": list(per_task["mse_cart_after"])}
    else:
        data["paired"] = {"before": [errors["before"]["mse_cart"]], "after": [errors["after"]["mse_cart"]]}
    if demo is None:
        why = "no inner update (inner.n_updates=0): no demonstration-driven learning, before = after"
        for panel in ("raster_demonstration", "raster_error_module", "signals"):
            data["notes"][panel] = why
        return data
    data["raster_demonstration"] = _events(demo.trajectory.outputs[task], dt_ms)
    if demo.source_trajectory is not None:
        data["raster_error_module"] = _events(demo.source_trajectory.outputs[task], dt_ms)
    elif demo.signals is not None:
        data["notes"]["raster_error_module"] = "no error module (e-prop 1): learning signals = output error × feedback"
    else:
        data["notes"]["raster_error_module"] = "no error module: the inner step is an exact BPTT gradient (MAML-style)"
    if demo.signals is not None:
        signals = demo.signals[task].T.to(torch.float64)
        data["signals"] = signals.numpy()
        # symmetric colour limits at the 99th percentile of |L| (a few large values would wash out the rest)
        data["signal_limit"] = float(torch.quantile(signals.abs().flatten(), 0.99)) or float(signals.abs().max()) \
            or 1.0
    else:
        data["notes"]["signals"] = "no learning signals: the inner step is an exact BPTT gradient (MAML-style)"
    return data


def _note(ax, text: str) -> None:
    import textwrap

    ax.text(0.5, 0.5, textwrap.fill(text, 44), ha="center", va="center", fontsize=9, transform=ax.transAxes,
            color="0.3")
    ax.set_xticks([])
    ax.set_yticks([])


def figure_one_shot(path: Path, batch, out, task: int = 0, per_task: dict | None = None,
                    index: int | None = None) -> dict:
    """The one-shot claim in one figure: per-task MSE_cart before vs after (paired, all held-out tasks), the
    example task's hand path (target / demonstration / after one update, arm base marked) and joint velocities,
    rasters of the demonstration and test trials and of the error module, the learning signals (zero-centred
    diverging colour map with a colour bar). Time axes in ms (step · ``batch.dt_ms``). Returns
    :func:`figure_data`, what the panels show."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import TwoSlopeNorm

    data = figure_data(batch, out, task, per_task, index)
    t_ms, errors, notes = data["time_ms"], data["errors"], data["notes"]
    fig = plt.figure(figsize=(15, 11))
    grid = fig.add_gridspec(3, 3, height_ratios=(1.15, 1, 1))
    ax = fig.add_subplot(grid[0, 0])
    before, after = data["paired"]["before"], data["paired"]["after"]
    for b, a in zip(before, after, strict=True):
        ax.plot((0, 1), (b, a), color="0.6", lw=0.6, alpha=0.6)
    ax.scatter([0] * len(before), before, s=8, color="tab:gray", zorder=3)
    ax.scatter([1] * len(after), after, s=8, color="tab:red", zorder=3)
    median = (sorted(before)[(len(before) - 1) // 2], sorted(after)[(len(after) - 1) // 2])
    ax.plot((0, 1), median, color="k", lw=2.5, marker="o", label="median")
    ax.set_yscale("log")
    ax.set_xticks((0, 1), ("before update\n(demonstration)", "after ONE update\n(test trial)"))
    ax.set_xlim(-0.3, 1.3)
    ax.set_ylabel("MSE_cart (arm units²)")
    ax.set_title(f"held-out tasks (n = {len(before)}): MSE_cart, paired")
    ax.legend(fontsize=8, loc="upper right")
    ax = fig.add_subplot(grid[0, 1])
    hand = data["hand"]
    ax.plot(*hand["target"].T, "k", lw=2.5, label="target")
    ax.plot(*hand["demonstration"].T, color="tab:gray", label="before (demonstration)")
    ax.plot(*hand["after"].T, color="tab:red", label="after one update (test)")
    ax.plot(*hand["target"][0], "ko", ms=5)
    ax.plot(*hand["base"], marker="s", color="tab:blue", ms=8, ls="none", label="arm base (shoulder)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.set_xlabel("x (arm units)")
    ax.set_ylabel("y (arm units)")
    ax.set_title(f"hand path, task {data['task']} (median MSE_cart after)\n"
                 f"MSE_cart {errors['before']['mse_cart']:.3g} → {errors['after']['mse_cart']:.3g}, "
                 f"RMS hand error {errors['before']['hand_rmse']:.3g} → {errors['after']['hand_rmse']:.3g}",
                 fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax = fig.add_subplot(grid[0, 2])
    omega = data["joint_velocities"]
    for k, color in ((0, "tab:blue"), (1, "tab:orange")):
        ax.plot(t_ms, omega["target"][:, k], color=color, lw=3, alpha=0.35, label=f"target ω{k + 1}")
        ax.plot(t_ms, omega["before"][:, k], color=color, lw=0.8, ls="--", label=f"ω{k + 1} before")
        ax.plot(t_ms, omega["after"][:, k], color=color, lw=1.2, label=f"ω{k + 1} after")
    ax.set_xlabel("time (ms)")
    ax.set_ylabel("joint velocity (rad/s)")
    ax.set_title("joint velocities (shoulder ω1, elbow ω2)")
    ax.text(0.02, 0.02, f"MSE_motor {errors['before']['mse_motor']:.3g} → {errors['after']['mse_motor']:.3g} "
            "(rad/s)²", transform=ax.transAxes, fontsize=8, bbox={"fc": "white", "alpha": 0.8, "lw": 0})
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    rasters = (("raster_demonstration", "learning network, demonstration trial"),
               ("raster_test", "learning network, test trial (after the update)"),
               ("raster_error_module", "error module, demonstration trial"))
    for column, (key, title) in enumerate(rasters):
        ax = fig.add_subplot(grid[1, column])
        ax.set_title(title)
        if data[key] is None:
            _note(ax, notes[key])
            continue
        ax.scatter(data[key][:, 0], data[key][:, 1], s=3, c="k", marker="|", linewidths=0.5)
        ax.set_xlim(0, batch.n_steps * batch.dt_ms)
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("neuron")
    ax = fig.add_subplot(grid[2, :])
    ax.set_title("learning signals L_j(t) of the demonstration trial (drive the one e-prop update)")
    if data["signals"] is None:
        _note(ax, notes["signals"])
    else:
        limit = data["signal_limit"]
        image = ax.imshow(data["signals"], aspect="auto", cmap="RdBu_r", interpolation="nearest",
                          norm=TwoSlopeNorm(0.0, -limit, limit),
                          extent=(0.0, batch.n_steps * batch.dt_ms, data["signals"].shape[0], 0))
        ax.set_xlabel("time (ms)")
        ax.set_ylabel("learning-network neuron j")
        fig.colorbar(image, ax=ax, label="L_j (0 = white, limits ±99th percentile of |L|)", pad=0.01,
                     extend="both")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data
