"""Learning curves of every learning rule, mean ± sd over seeds, on a classification and a regression task:
evidence accumulation with ALIF neurons and a sum of sines with LIF neurons — one ``eprop-l2l compare`` per task
(the same seeds, initial weights, batches and budget for every rule), then the curves of its ``results.json``
aggregated per rule and iteration.

    python scripts/compare_curves.py run [--tasks evidence sines] [--seeds 0 1 2] [--out DIR] [KEY=VALUE ...]
    python scripts/compare_curves.py aggregate DIR [DIR ...]

``run`` writes, per task, ``DIR/<task>/`` (the comparison's own results.{json,md} and learning_curves.png) and
``DIR/<task>/curves.{json,md,png}``: per rule the iterations every seed evaluated, the held-out metric and loss
there as mean ± sd (sample sd; 0 for one seed), and the number of seeds. A rule the comparison refuses at the
task's size (exact RTRL and SnAp-2 hold the dense influence matrix: small networks only) is left out, and
``curves.md`` names it with the reason. ``aggregate`` rewrites the curves of finished comparisons. KEY=VALUE
overrides go to every comparison (``iterations=50``, ``cell.n_rec=32``). A full run takes more than an hour per
seed and task on this project's CPU machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

# every rule of the registry that trains a recurrent network (superspike and decolle train feedforward layers)
RULES = ("bptt", "tbptt(k=50)", "eprop1(feedback=symmetric)", "eprop1(feedback=random)",
         "eprop1(feedback=adaptive)", "eprop3(k=50)", "rflo", "ostl", "snap2", "rtrl")
TASKS = {
    "evidence": dict(task="evidence", task_fields=dict(n_in=40, n_cues=7, delay_ms=500), cell="alif",
                     cell_fields=dict(n_rec=50, n_adaptive=25, tau_a=1000.0, beta=1.0, v_th=0.3, n_ref=2),
                     readout_fields=dict(tau_out=20.0), iterations=300, batch_size=16, lr=5e-3, eval_every=20,
                     reg_coefficient=0.1),
    "sines": dict(task="sines", task_fields=dict(n_in=20, n_steps=500), cell="lif",
                  cell_fields=dict(n_rec=50, v_th=0.3, n_ref=2), readout_fields=dict(tau_out=20.0),
                  iterations=300, batch_size=8, lr=5e-3, eval_every=20, reg_coefficient=0.1),
}


def _stats(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) if len(values) > 1 else 0.0


def aggregate(results: dict) -> dict:
    """Per rule of a comparison's ``results.json``: the iterations at which every seed has a value, and there the
    held-out metric and loss as mean and sd over the seeds (a diverged seed's later points are missing, so its
    rule's curve ends where it diverged)."""
    rules: dict[str, list[dict]] = {}
    for run in results["runs"]:
        rules.setdefault(run["rule"], []).append(run)
    curves = {}
    for rule, runs in rules.items():
        metric = runs[0]["metric"]
        by_seed = [{p["iteration"]: p for p in run["curve"] if metric in p} for run in runs]
        iterations = sorted(set.intersection(*(set(points) for points in by_seed)))
        curve = {"iterations": iterations, "metric": metric, "n_seeds": len(runs),
                 "seeds": [run.get("seed") for run in runs], "diverged": sum(bool(r.get("diverged")) for r in runs)}
        for key in (metric, "loss"):
            pairs = [_stats([points[i][key] for points in by_seed]) for i in iterations]
            curve[key] = {"mean": [m for m, _ in pairs], "sd": [s for _, s in pairs]}
        curves[rule] = curve
    return curves


def markdown(task: str, curves: dict, skipped: dict[str, str]) -> str:
    lines = [f"## {task}", "", "| rule | seeds | last iteration | held-out metric | held-out loss |",
             "|---|---|---|---|---|"]
    for rule, c in curves.items():
        if not c["iterations"]:
            lines.append(f"| {rule} | {c['n_seeds']} | – | – | – |")
            continue
        metric, loss = c[c["metric"]], c["loss"]
        lines.append(f"| {rule} | {c['n_seeds']} | {c['iterations'][-1]} | {c['metric']} {metric['mean'][-1]:.3f} "
                     f"± {metric['sd'][-1]:.3f} | {loss['mean'][-1]:.4g} ± {loss['sd'][-1]:.2g} |")
    for rule, reason in skipped.items():
        lines.append(f"\nnot run: {rule} — {reason}")
    return "\n".join(lines) + "\n"


def figure(path: Path, task: str, curves: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for index, (rule, c) in enumerate(curves.items()):
        for ax, key in zip(axes, (c["metric"], "loss"), strict=True):
            mean, sd = c[key]["mean"], c[key]["sd"]
            ax.plot(c["iterations"], mean, color=f"C{index % 10}", label=rule)
            ax.fill_between(c["iterations"], [m - s for m, s in zip(mean, sd, strict=True)],
                            [m + s for m, s in zip(mean, sd, strict=True)], color=f"C{index % 10}", alpha=0.2)
            ax.set_xlabel("iteration")
            ax.set_ylabel(f"held-out {key} (mean ± sd)")
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(task)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_curves(folder: Path, task: str, skipped: dict[str, str] | None = None) -> dict:
    """``curves.{json,md,png}`` of the finished comparison in ``folder``."""
    results = json.loads((folder / "results.json").read_text())
    curves = aggregate(results)
    skipped = skipped or {}
    (folder / "curves.json").write_text(json.dumps({"task": task, "curves": curves, "not_run": skipped}, indent=1))
    (folder / "curves.md").write_text(markdown(task, curves, skipped))
    figure(folder / "curves.png", task, curves)
    return curves


def accepted_rules(values: dict, overrides: list[str]) -> tuple[list[str], dict[str, str]]:
    """The rules a comparison of ``values`` accepts, and the refused ones with the configuration's reason."""
    from eprop_l2l.config.comparison import load_config
    from eprop_l2l.errors import ConfigError

    accepted, refused = [], {}
    for rule in RULES:
        try:
            load_config(_yaml(values, [rule]), overrides)
            accepted.append(rule)
        except ConfigError as err:
            refused[rule] = str(err)
    return accepted, refused


def _yaml(values: dict, rules: list[str]) -> str:
    import tempfile

    from omegaconf import OmegaConf

    handle = tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False)
    with handle:
        handle.write(OmegaConf.to_yaml({**values, "rules": list(rules)}))
    return handle.name


def run(tasks: list[str], seeds: list[int], out: Path, overrides: list[str]) -> None:
    from eprop_l2l.commands.compare import main as compare

    for task in tasks:
        values = {**TASKS[task], "seeds": list(seeds)}
        rules, refused = accepted_rules(values, overrides)
        folder = out / task
        out.mkdir(parents=True, exist_ok=True)
        compare(_yaml(values, rules), overrides, str(folder))
        write_curves(folder, task, refused)
        print(f"{task}: {folder}/curves.{{json,md,png}}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    go = sub.add_parser("run", help="run the comparisons, then aggregate")
    go.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    go.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    go.add_argument("--out", default="runs/compare_curves")
    go.add_argument("overrides", nargs="*", help="KEY=VALUE for every comparison")
    again = sub.add_parser("aggregate", help="rewrite curves.* of finished comparisons")
    again.add_argument("folders", nargs="+")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.tasks, args.seeds, Path(args.out), args.overrides)
    else:
        for folder in map(Path, args.folders):
            write_curves(folder, folder.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
