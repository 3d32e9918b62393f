"""A run's training curves from ``history.jsonl`` (meta-loss, validation MSEs before and
after the update, firing rates, the meta-learned inner η, skipped steps) as a PNG; for a multirun directory (one
sub-directory per run, as ``train -m`` writes), a summary table, one row per run — the configuration keys that
differ between the runs → held-out metrics — as Markdown and CSV. ``eprop-l2l plot`` draws them
(:mod:`eprop_l2l.commands.plot`)."""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path

from ..config.compose import config_from_yaml
from ..errors import ConfigError
from ..outputs import check_output_file, claim, staging_prefix
from .rundir import _umask

CURVES = "training_curves.png"
SUMMARY_COLUMNS = ("iterations", "mse_cart_before", "mse_cart_after", "mse_motor_after", "hand_rmse_after",
                   "rate_network_hz", "rate_module_hz", "inner_lr")


def read_history(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "history.jsonl"
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except OSError:
        raise ConfigError(str(run_dir), "no history.jsonl: not a run directory (nor a multirun directory of runs)") \
            from None
    except UnicodeDecodeError as err:
        raise ConfigError(str(path), f"not a text file (binary data at byte {err.start}): a run's history is one "
                          "JSON record per line") from None
    except json.JSONDecodeError as err:
        raise ConfigError(str(path), f"unreadable line ({err.msg})") from None


def curves(history: list[dict]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The series of each panel: ``{panel: {label: (iterations, values)}}`` (records without a key skipped)."""

    def series(key: str) -> tuple[list[int], list[float]]:
        found = [(r["iteration"], r[key]) for r in history if r.get(key) is not None]
        return [i for i, _ in found], [v for _, v in found]

    panels = {
        "meta-loss": {"meta-loss (training batch)": series("loss")},
        "MSE_cart": {"validation, before update": series("val/mse_cart_before"),
                     "validation, after one update": series("val/mse_cart_after")},
        "MSE_motor (rad/s)²": {"validation, before update": series("val/mse_motor_before"),
                               "validation, after one update": series("val/mse_motor_after")},
        "firing rate (Hz)": {"learning network": series("train/rate_network_hz"),
                             "error module": series("train/rate_module_hz")},
        "meta-learned inner η": {"η": series("inner_lr")},
        "skipped (non-finite) steps": {"total skipped": series("skipped_total")},
    }
    return {name: {label: s for label, s in panel.items() if s[0]} for name, panel in panels.items()}


def plot_curves(run_dir: Path, out: Path | None = None) -> tuple[Path, dict]:
    """Training curves of one run as a PNG (default ``RUN/training_curves.png``); returns the path and the
    plotted series (:func:`curves`)."""
    import matplotlib

    matplotlib.use("Agg")
    history = read_history(run_dir)
    if not history:
        raise ConfigError(str(Path(run_dir) / "history.jsonl"), "empty: no meta-iteration recorded yet")
    data = curves(history)
    out = Path(out) if out is not None else Path(run_dir) / CURVES
    if out.suffix.lower() != ".png":
        out = out / CURVES
    out.parent.mkdir(parents=True, exist_ok=True)
    with claim(out, "--out", "an eprop-l2l plot"):  # one writer of the file at a time
        check_output_file(out, "--out", previous_name=CURVES)  # never over a run's own files
        _draw(run_dir, history, data, out)
    return out, data


def _draw(run_dir: Path, history: list[dict], data: dict, out: Path) -> None:
    """The figure, staged in a temporary file beside ``out`` and renamed into place (never half-written)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8))
    logs = {"meta-loss", "MSE_cart", "MSE_motor (rad/s)²", "meta-learned inner η"}
    for ax, (name, panel) in zip(axes.flat, data.items(), strict=True):
        ax.set_title(name)
        ax.set_xlabel("meta-iteration")
        if not panel:
            why = "η not meta-learned (inner.learn_lr=false) or not logged" if "η" in name else "not logged"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes, color="0.3")
            continue
        for label, (x, y) in panel.items():
            ax.plot(x, y, lw=1, marker="." if len(x) < 30 else None, label=label)
        if name in logs and all(v > 0 for _, (_, ys) in panel.items() for v in ys):
            ax.set_yscale("log")
        if name == "skipped (non-finite) steps" and max(panel["total skipped"][1]) == 0:
            ax.text(0.5, 0.5, "no step skipped", ha="center", va="center", transform=ax.transAxes, color="0.3")
        ax.legend(fontsize=8)
    fig.suptitle(f"{run_dir}: {len(history)} meta-iterations")
    fig.tight_layout()
    fd, staged = tempfile.mkstemp(prefix=staging_prefix(out), suffix=".png", dir=out.parent)
    os.close(fd)
    try:
        fig.savefig(staged, dpi=100, format="png")
        os.chmod(staged, 0o666 & ~_umask())
        os.replace(staged, out)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staged)
        raise
    finally:
        plt.close(fig)


def _flat(record: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def flat_config(config) -> dict:
    """A run's configuration (:class:`~eprop_l2l.config.schema.TrainConfig`) as ``{dotted.key: value}``."""
    return _flat(dataclasses.asdict(config))


def differing_keys(configs: list[dict]) -> list[str]:
    """The keys (sorted) whose values differ between the flat configurations ``configs``."""
    return sorted({k for c in configs for k in c if len({repr(d.get(k)) for d in configs}) > 1})


def runs_of(directory: Path) -> list[Path]:
    """The run directories (holding ``config.yaml``) directly under a multirun directory, in index order."""
    found = [p for p in Path(directory).iterdir() if p.is_dir() and (p / "config.yaml").exists()]

    def order(path: Path):
        head = path.name.split("_", 1)[0]
        return (int(head), path.name) if head.isdigit() else (1 << 30, path.name)

    return sorted(found, key=order)


def summary_rows(directory: Path) -> tuple[list[str], list[dict]]:
    """One row per run of a multirun: ``run``, the configuration keys that differ between the runs (their
    overrides; ``run.dir`` left out), then the held-out metrics of its ``metrics.json`` (empty when the run has
    not been evaluated)."""
    runs = runs_of(directory)
    configs = [flat_config(config_from_yaml(run / "config.yaml")) for run in runs]
    keys = [k for k in differing_keys(configs) if k != "run.dir"]
    rows = []
    for run, config in zip(runs, configs, strict=True):
        metrics_file = run / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.exists() else {}
        row = {"run": run.name, **{k: config.get(k) for k in keys}}
        row.update({k: metrics.get(k) for k in SUMMARY_COLUMNS})
        rows.append(row)
    return ["run", *keys, *SUMMARY_COLUMNS], rows


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def summary_tables(columns: list[str], rows: list[dict]) -> tuple[str, str]:
    """(Markdown, CSV) of :func:`summary_rows` (CSV with full precision)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(_cell(row[c]) for c in columns) + " |" for row in rows]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: ("" if row[c] is None else row[c]) for c in columns} for row in rows)
    return "\n".join(lines) + "\n", buffer.getvalue()
