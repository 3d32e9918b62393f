"""The Scorbot's one-shot figure: the end effector's 3-D path (target, before and after the update), both
joints' angular velocities, and the paired per-trajectory deviation in cm. ``figure_data`` returns what the
panels show (tests check it, not pixels)."""

from __future__ import annotations

from pathlib import Path

import torch

from .scorbot_kinematics import CM_PER_M, JOINT_NAMES


def figure_data(family, batch, out, task: int = 0, per_task: dict | None = None, index: int | None = None) -> dict:
    one = batch.select(slice(task, task + 1))
    errors = {when: {k: float(v[0]) for k, v in family.errors(out[key][task:task + 1], one).items()}
              for when, key in (("before", "y_demo"), ("after", "y_test"))}
    paired = per_task if per_task is not None else {f"deviation_cm_{w}": [errors[w]["deviation_cm"]]
                                                    for w in ("before", "after")}
    return {
        "task": index if index is not None else task,
        "time_ms": (torch.arange(batch.n_steps, dtype=torch.float64) * batch.dt_ms).numpy(),
        "errors": errors,
        "path_cm": {"target": CM_PER_M * batch.extra["hand"][task].double().numpy(),
                    "before": CM_PER_M * family.produced_path(out["y_demo"][task].double()).numpy(),
                    "after": CM_PER_M * family.produced_path(out["y_test"][task].double()).numpy()},
        "joint_velocities": {"target": batch.targets[task].numpy(), "before": out["y_demo"][task].numpy(),
                             "after": out["y_test"][task].numpy()},
        "paired_cm": {"before": list(paired["deviation_cm_before"]), "after": list(paired["deviation_cm_after"])},
    }


def figure_one_shot(family, path, batch, out, per_task: dict | None = None, index: int | None = None) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = figure_data(family, batch, {k: (v.detach() if isinstance(v, torch.Tensor) else v) for k, v in out.items()},
                       per_task=per_task, index=index)
    fig = plt.figure(figsize=(13, 4))
    ax = fig.add_subplot(1, 3, 1, projection="3d")
    for name, style in (("target", "k-"), ("before", "C0--"), ("after", "C1-")):
        p = data["path_cm"][name]
        ax.plot(p[:, 0], p[:, 1], p[:, 2], style, label=name)
    ax.set(xlabel="x (cm)", ylabel="y (cm)", zlabel="z (cm)",
           title=f"end effector, trajectory {data['task']}: {data['errors']['before']['deviation_cm']:.1f} → "
                 f"{data['errors']['after']['deviation_cm']:.1f} cm")
    ax.legend(fontsize=7)
    for j, joint in enumerate(JOINT_NAMES):
        axis = fig.add_subplot(2, 3, 2 + 3 * j)
        for name, style in (("target", "k-"), ("before", "C0--"), ("after", "C1-")):
            axis.plot(data["time_ms"], data["joint_velocities"][name][:, j], style, lw=1)
        axis.set(ylabel=f"ω {joint} (rad/s)", xlabel="time (ms)" if j else None)
    axis = fig.add_subplot(1, 3, 3)
    before, after = data["paired_cm"]["before"], data["paired_cm"]["after"]
    axis.plot([0, 1], [before, after], "-", color="0.6", lw=0.5)
    axis.set(xticks=[0, 1], xticklabels=["before", "after one update"], ylabel="end-effector deviation (cm)",
             title=f"{len(before)} held-out trajectories")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return data
