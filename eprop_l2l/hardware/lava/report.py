"""Fidelity numbers of a Lava run against the exported PyTorch references (numpy only).

* spikes: fraction of (step, neuron) entries equal to the exported PyTorch spikes, and the first step that
  differs (−1: identical);
* ΔW: Pearson correlation and relative error ‖a − b‖/‖b‖ of Lava's update, expressed as e-prop's estimate
  −ΔW/η, against the exported float tag Σ_t ψ L x̄ (W_rec without its diagonal); with the fixed-point models
  also Lava's integer tag and weight register against the exported emulation's;
* the test trial: readout y^t = κ y^{t-1} + s·W_out z^t (+ b), the plant's joint angles, end-effector path and
  the family's primary metric (:mod:`.plants`: MSE_cart of the two-joint arm, the ED-Scorbot's deviation in cm).
"""

from __future__ import annotations

import math

import numpy as np

from ..description import PLANT_METRICS


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation (hardware/fidelity.py ``correlation``)."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(a @ a) * float(b @ b))
    return float(a @ b / denom) if denom > 0 else float("nan")


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """‖a − b‖ / ‖b‖ (hardware/fidelity.py ``relative_error``)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    norm = float(np.linalg.norm(b))
    return float(np.linalg.norm(a - b) / norm) if norm > 0 else float("nan")


def off_diagonal(m: np.ndarray) -> np.ndarray:
    return m[~np.eye(m.shape[0], dtype=bool)] if m.shape[0] == m.shape[1] else m.ravel()


def spike_agreement(a: np.ndarray, b: np.ndarray) -> dict:
    differ = np.asarray(a) != np.asarray(b)
    rows = np.flatnonzero(differ.any(axis=1))
    return {"agreement": float(1.0 - differ.mean()), "identical": bool(rows.size == 0),
            "first_differing_step": int(rows[0]) + 1 if rows.size else -1, "n_differing": int(differ.sum())}


def readout(z: np.ndarray, w_out: np.ndarray, spec: dict, b_out: np.ndarray | None = None) -> np.ndarray:
    """y^t = κ y^{t-1} + s·W_out z^t (+ b) for spikes ``z [T, N]`` → ``[T, n_out]`` (``cells/readout.py``
    ``LeakyReadout``, from its exported ``ReadoutSpec``)."""
    kappa, scale = float(spec["kappa"]), float(spec.get("input_scale", 1.0))
    drive = scale * (np.asarray(z, np.float64) @ np.asarray(w_out, np.float64).T)
    if b_out is not None and spec.get("bias"):
        drive = drive + np.asarray(b_out, np.float64)
    y = np.zeros_like(drive)
    acc = np.zeros(drive.shape[1])
    for t in range(drive.shape[0]):
        acc = kappa * acc + drive[t]
        y[t] = acc
    return y


def summary(values: list[float]) -> dict:
    arr = np.asarray(values, np.float64)
    return {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}


def table(report: dict) -> str:
    """The human-readable table of ``lava_report.json``."""
    metric = report["metric"]
    label = PLANT_METRICS[metric]
    width = max(14, len(label) + 6)  # the arm's table as it was
    lines = [f"Lava {report['lava_version']} ({report['run_cfg']}, {report['precision']} models), "
             f"{report['n_tasks']} held-out movements, {report['n_steps']} steps, {report['pairing']} pairing, "
             f"learning signal {report['learning_signal']}",
             f"{'task':>4} {'spikes demo':>12} {'spikes test':>12} {'corr ΔW_in':>11} {'corr ΔW_rec':>12} "
             f"{'relerr in':>10} {'relerr rec':>11} {label + ' Lava':>{width}} {'PyTorch':>9} {'s':>6}"]
    for t in report["tasks"]:
        f = t["vs_pytorch_float"]
        lines.append(f"{t['task']:>4} {t['spikes_demo']['agreement']:>12.6f} {t['spikes_test']['agreement']:>12.6f} "
                     f"{f['w_in']['correlation']:>11.6f} {f['w_rec']['correlation']:>12.6f} "
                     f"{f['w_in']['relative_error']:>10.2e} {f['w_rec']['relative_error']:>11.2e} "
                     f"{t[f'{metric}_lava']:>{width}.5f} {t[f'{metric}_pytorch']:>9.5f} {t['seconds']:>6.1f}")
    if report["precision"] == "fixed":
        lines.append("fixed point vs the exported Loihi-precision emulation (integer tag, weight register):")
        for t in report["tasks"]:
            q = t["vs_fixed_emulation"]
            lines.append(f"{t['task']:>4} tag corr w_in {q['tag_w_in']['correlation']:.4f} "
                         f"relerr {q['tag_w_in']['relative_error']:.3f} | w_rec {q['tag_w_rec']['correlation']:.4f} "
                         f"relerr {q['tag_w_rec']['relative_error']:.3f} | ΔW relerr w_in "
                         f"{q['dw_w_in']['relative_error']:.3f} w_rec {q['dw_w_rec']['relative_error']:.3f}")
    m = report["mean"]
    if f"{metric}_emulation" in m:
        lines.append(f"{label} after the update: Lava fixed {m[f'{metric}_lava']:.5f}, exported fixed-point "
                     f"emulation {m[f'{metric}_emulation']:.5f}, PyTorch float {m[f'{metric}_pytorch']:.5f}")
    if not report["learning_signal"].startswith("replayed"):
        lines.append(f"learning signal computed in Lava vs exported L: relative error "
                     f"{m['signal_relative_error']:.2e}")
    lines.append(f"mean: spikes demo {m['spike_agreement_demo']:.6f}, ΔW corr in/rec {m['corr_w_in']:.6f}/"
                 f"{m['corr_w_rec']:.6f}, {label} Lava {m[f'{metric}_lava']:.5f} vs PyTorch "
                 f"{m[f'{metric}_pytorch']:.5f}, {report['seconds']:.1f} s")
    return "\n".join(lines)


def figure(path, hand_target: np.ndarray, hand_pytorch: np.ndarray, hand_lava: np.ndarray, title: str) -> bool:
    """End-effector paths (target, PyTorch, Lava) per task: in the plane for the two-joint arm, in 3-D (m) for the
    Scorbot; False when matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    k, spatial = hand_target.shape[0], hand_target.shape[-1] == 3
    fig = plt.figure(figsize=(3.2 * k, 3.4))
    for i in range(k):
        ax = fig.add_subplot(1, k, i + 1, **({"projection": "3d"} if spatial else {}))
        ax.plot(*hand_target[i].T, "k-", lw=2.5, alpha=0.35, label="target")
        ax.plot(*hand_pytorch[i].T, "C0-", lw=1.5, label="PyTorch")
        ax.plot(*hand_lava[i].T, "C3--", lw=1.2, label="Lava")
        ax.set_aspect("equal")
        ax.set_title(f"task {i}", fontsize=9)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.legend(fontsize=7, loc="best")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def figure_from_results(out_dir) -> str | None:
    """Draw ``lava_hand_paths.png`` in a report directory from its ``lava_results.npz`` (for the torch side, whose
    environment has matplotlib); returns the path, or None without matplotlib."""
    from pathlib import Path

    out_dir = Path(out_dir)
    with np.load(out_dir / "lava_results.npz") as data:
        arrays = {k: data[k] for k in ("hand_target", "hand_pytorch", "hand_test")}
    path = out_dir / "lava_hand_paths.png"
    drawn = figure(path, arrays["hand_target"], arrays["hand_pytorch"], arrays["hand_test"],
                   "hand paths after one e-prop update: PyTorch vs Lava")
    return str(path) if drawn else None
