"""Every learning rule on one task family and cell, with the same seeds and budget (``eprop-l2l compare``).

A comparison is a :class:`~eprop_l2l.config.comparison.CompareConfig`. For every (rule, seed) the network starts
from the same initial weights (drawn from ``seed``), sees the same training batches (a generator seeded from
``seed``) and is evaluated on the same held-out batch, for ``iterations`` Adam steps.

Written to the output directory:

* ``results.json`` — the configuration, per (rule, seed) the learning curve (held-out loss and metric every
  ``eval_every`` iterations), the final held-out loss / metric, wall time, peak memory and per-step cost;
* ``results.md`` — one row per rule (mean ± sd over seeds);
* ``learning_curves.png`` — held-out metric and loss against iterations.

The metric is the family's: bit error for copy-repeat, classification error for classification families
(store-recall: 1 − recall accuracy), normalised MSE for regression. With ``curriculum=true`` (copy-repeat) the
pattern length starts at ``task.pattern_length`` and grows by one whenever the held-out bit error is
≤ ``solve_threshold``; the table then reports the longest pattern solved.

Peak memory: the resident set size sampled every 5 ms while the rule trains, minus its value just before
(``/proc/self/statm``; tensors are invisible to ``tracemalloc``). With ``isolate=true`` (the command line's
default) every (rule, seed) runs in a fresh process, so one rule's freed memory cannot hide the next one's.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

import torch

from ..config.comparison import DTYPES, CompareConfig
from ..errors import ConfigError
from ..inner_loop.losses import Loss
from ..inner_loop.metrics import classification_error, normalised_mse
from ..inner_loop.regularization import RateRegularizer
from ..inner_loop.rules import RuleRunner, RuleSpec
from ..outputs import staging_prefix


# ------------------------------------------------------------------------------------------ measurement
class PeakRSS:
    """Peak resident set size (bytes) above the value at start, sampled every ``interval`` seconds."""

    def __init__(self, interval: float = 0.005):
        self.interval = interval
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.start = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self._page
        except OSError:
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    @property
    def extra_mb(self) -> float:
        return (self.peak - self.start) / 2**20


def metric_name(family) -> str:
    if family.name == "copy_repeat":
        return "bit_error"
    return "error" if family.loss == "cross_entropy" else "nmse"


def evaluate(network, params, family, batch) -> tuple[float, float]:
    """(held-out loss per trial, metric) of ``params`` on ``batch``."""
    with torch.no_grad():
        y = network.run(params, batch.inputs)[1]
        value = float(Loss(family.loss).value(y, batch.targets, batch.mask)) / batch.batch_size
        if family.name == "copy_repeat":
            metric = family.bit_error(y, batch)
        elif family.loss == "cross_entropy":
            metric = classification_error(y, batch.targets, batch.mask)
        else:
            metric = normalised_mse(y, batch.targets, batch.mask)
    return value, float(metric)


def run_rule(config: CompareConfig, spec: RuleSpec, seed: int) -> dict:
    """Train one rule from ``seed`` and return its record (curve, final numbers, costs)."""
    from ..runtime import configure_cpu

    configure_cpu(threads=1)
    dtype = DTYPES[config.dtype]
    family = config.family()
    network = config.network(family, spec)
    params = network.init_params(torch.Generator().manual_seed(seed), dtype)
    data_gen = torch.Generator().manual_seed(10_000 + seed)
    rule_gen = torch.Generator().manual_seed(20_000 + seed)

    def held_out(fam):
        return fam.sample(config.eval_batch, torch.Generator().manual_seed(30_000 + seed), dtype)

    eval_batch = held_out(family)
    spiking = hasattr(network.cell, "spec")
    regularizer = (RateRegularizer(config.reg_coefficient, config.reg_target_hz, dt_ms=config.dt_ms)
                   if spiking and config.reg_coefficient > 0 else None)
    plastic = tuple(params)  # every weight of the network (the LSTM's bias, each feedforward layer's)
    runner = RuleRunner(spec, network, rule_gen, dtype, regularizer, plastic, lr=config.lr)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    optimizer = torch.optim.Adam(list(leaves.values()), lr=config.lr)
    loss = Loss(family.loss)
    curve, steps_run, solved, train_time = [], 0, 0, 0.0
    length = family.pattern_length if config.curriculum else None

    def record(iteration):
        nonlocal family, eval_batch, solved, length
        value, metric = evaluate(network, {k: v.detach() for k, v in leaves.items()}, family, eval_batch)
        point = {"iteration": iteration, "loss": value, metric_name(family): metric, "time_s": train_time}
        if config.curriculum:
            point["pattern_length"] = length
            if metric <= config.solve_threshold:
                solved = max(solved, length)
                if length < config.max_pattern_length:
                    length += 1
                    family = config.family(pattern_length=length)
                    eval_batch = held_out(family)
        curve.append(point)

    record(0)
    with PeakRSS() as memory:
        for iteration in range(1, config.iterations + 1):
            started = time.perf_counter()
            batch = family.sample(config.batch_size, data_gen, dtype)
            with torch.no_grad():
                grads, value, _, info = runner.update({k: v.detach() for k, v in leaves.items()}, batch, loss)
            for name, tensor in leaves.items():
                tensor.grad = grads[name].to(tensor.dtype) if name in grads else None
            optimizer.step()
            train_time += time.perf_counter() - started
            steps_run += family.n_steps
            if not all(math.isfinite(float(v.detach().abs().max())) for v in leaves.values()):
                curve.append({"iteration": iteration, "diverged": True})
                break
            if iteration % config.eval_every == 0 or iteration == config.iterations:
                record(iteration)
                if info:
                    curve[-1].update(info)
    final = next((p for p in reversed(curve) if "loss" in p), curve[0])
    out = {"rule": spec.name, "spec": dataclasses.asdict(spec), "seed": seed, "cell": type(network.cell).__name__,
           "n_rec": network.cell.n_rec, "curve": curve, "final_loss": final["loss"],
           "final_metric": final[metric_name(family)], "metric": metric_name(family), "wall_s": train_time,
           "peak_mb": memory.extra_mb, "ms_per_step": 1000.0 * train_time / max(steps_run, 1),
           "steps_run": steps_run, "diverged": any(p.get("diverged") for p in curve)}
    if config.curriculum:
        out["longest_solved"] = solved
        out["final_pattern_length"] = length
    return out


OUTPUT_FILES = ("results.json", "results.md", "learning_curves.png")  # what a comparison writes into --out
WEIGHT_COPIES = 8  # parameters, leaves, gradients, Adam's two moments, the rule's working copies
ACTIVATION_COPIES = 12  # per trial, time step and unit (LSTM: per gate), kept for the backward pass


def memory_estimate(config: CompareConfig) -> tuple[float, str]:
    """A lower estimate of the bytes one (rule, seed) needs, and the key to lower first: the weights
    (gates · n_rec · (n_in + n_rec)) and the activations of a training and a held-out batch."""
    family = config.family()
    n_rec = config.cell_fields.get("n_rec", 32)
    gates = 4 if config.cell == "lstm" else 1
    itemsize = DTYPES[config.dtype].itemsize
    weights = WEIGHT_COPIES * (gates * n_rec * (family.n_in + n_rec + 1) + family.n_out * (n_rec + 1))
    trial = family.n_steps * (gates * n_rec + family.n_in + family.n_out)
    activations = ACTIVATION_COPIES * config.batch_size * trial + config.eval_batch * trial
    key = "cell.n_rec" if weights >= activations else \
        "batch_size" if config.batch_size * ACTIVATION_COPIES >= config.eval_batch else "eval_batch"
    return float(itemsize * (weights + activations)), key


def check_memory(config: CompareConfig) -> None:
    """Refuse (one line naming the key) a comparison whose estimate exceeds the memory available, before any
    compute (``memory_check=false`` tries anyway)."""
    from .resources import FIXED_BYTES, _format, available_memory

    found = available_memory("cpu") if config.memory_check else None
    if found is None:
        return
    available, source = found
    need, key = memory_estimate(config)
    need += FIXED_BYTES
    if need > available:
        others = ", ".join(k for k in ("cell.n_rec", "batch_size", "task.<trial length>") if k != key)
        raise ConfigError(key, f"one rule needs about {_format(need)} of memory (weights and a batch's "
                          f"activations), {_format(available)} {source}; lower {key} (or {others}), or set "
                          "memory_check=false to try anyway")


def _run_isolated(config: CompareConfig, spec: RuleSpec, seed: int) -> dict:
    import multiprocessing

    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(run_rule, (config, spec, seed))


# ------------------------------------------------------------------------------------------------ reports
def summarise(config: CompareConfig, runs: list[dict]) -> list[dict]:
    rows = []
    for spec in config.rules:
        mine = [r for r in runs if r["rule"] == spec.name]
        if not mine:
            continue

        def stat(key, mine=mine):
            values = [r[key] for r in mine if r.get(key) is not None]
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5 if len(values) > 1 else 0.0
            return mean, sd

        row = {"rule": spec.name, "cell": mine[0]["cell"], "n_seeds": len(mine), "metric": mine[0]["metric"]}
        for r in mine:  # the best held-out value during training (unstable rules can end worse)
            r.setdefault("best_metric", min(p[r["metric"]] for p in r["curve"] if r["metric"] in p))
        for key in ("final_loss", "final_metric", "best_metric", "wall_s", "peak_mb", "ms_per_step"):
            row[key], row[key + "_sd"] = stat(key)
        if config.curriculum:
            row["longest_solved"] = [r["longest_solved"] for r in mine]
        row["diverged"] = sum(r["diverged"] for r in mine)
        rows.append(row)
    return rows


def markdown(config: CompareConfig, rows: list[dict]) -> str:
    metric = rows[0]["metric"] if rows else "metric"
    pm = lambda m, s, f: f"{m:{f}}" + (f" ± {s:{f}}" if s else "")  # noqa: E731
    head = ["rule", "cell", f"held-out {metric}", "held-out loss", f"best {metric}", "wall (s)", "peak mem (MB)",
            "ms / step"]
    if config.curriculum:
        head.insert(2, "longest L solved")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["rule"], r["cell"], pm(r["final_metric"], r["final_metric_sd"], ".3f"),
                 pm(r["final_loss"], r["final_loss_sd"], ".4g"), pm(r["best_metric"], r["best_metric_sd"], ".3f"),
                 pm(r["wall_s"], r["wall_s_sd"], ".1f"),
                 pm(r["peak_mb"], r["peak_mb_sd"], ".1f"), pm(r["ms_per_step"], r["ms_per_step_sd"], ".3f")]
        if config.curriculum:
            cells.insert(2, ", ".join(str(v) for v in r["longest_solved"]))
        if r["diverged"]:
            cells[0] += f" (diverged ×{r['diverged']})"
        lines.append("| " + " | ".join(cells) + " |")
    seeds = ", ".join(str(s) for s in config.seeds)
    note = (f"\n{config.task} {config.task_fields}, {config.cell} {config.cell_fields}; {config.iterations} "
            f"iterations × batch {config.batch_size}, Adam lr {config.lr}, seeds {seeds}; held-out batch of "
            f"{config.eval_batch}, evaluated every {config.eval_every} iterations (held-out: at the end; best: the "
            f"lowest during training). ms / step: training wall time per simulated time step of one batch.\n")
    return "\n".join(lines) + "\n" + note


def figure(path: Path, config: CompareConfig, runs: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = runs[0]["metric"]
    panels = [metric, "loss"] + (["pattern_length"] if config.curriculum else [])
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.8))
    for ax, key in zip(axes, panels, strict=True):
        for index, spec in enumerate(config.rules):
            mine = [r for r in runs if r["rule"] == spec.name]
            for j, run in enumerate(mine):
                points = [p for p in run["curve"] if key in p]
                ax.plot([p["iteration"] for p in points], [p[key] for p in points], color=f"C{index % 10}",
                        alpha=0.9 if j == 0 else 0.4, label=spec.name if j == 0 else None)
        ax.set_xlabel("iteration")
        ax.set_ylabel(f"held-out {key}" if key != "pattern_length" else "pattern length (curriculum)")
        if key == "loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{config.task}, {config.cell}: {config.iterations} iterations, seeds {list(config.seeds)}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def compare(config: CompareConfig, out_dir: str | Path, progress: bool = True) -> dict:
    """Run every rule of ``config`` for every seed; write ``results.{json,md}`` and ``learning_curves.png``
    into ``out_dir`` (created; existing files of these names are replaced) and return the results. Nothing is
    written before every run has finished: an interrupted comparison leaves ``out_dir`` as it was."""
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError("--out", f"{out} is a file, not a directory")
    check_memory(config)
    runs = []
    for spec in config.rules:
        for seed in config.seeds:
            run = _run_isolated(config, spec, seed) if config.isolate else run_rule(config, spec, seed)
            runs.append(run)
            if progress:
                extra = f", longest L solved {run['longest_solved']}" if config.curriculum else ""
                print(f"{spec.name:<28} seed {seed}: held-out {run['metric']} {run['final_metric']:.3f}, "
                      f"loss {run['final_loss']:.4g}, {run['wall_s']:.1f} s{extra}", flush=True)
    rows = summarise(config, runs)
    results = {"config": config.to_dict(), "summary": rows, "runs": runs}
    _write(out, results, markdown(config, rows), config, runs)
    return results


def _write(out: Path, results: dict, table: str, config: CompareConfig, runs: list[dict]) -> None:
    """The three files, staged in a folder beside ``out`` (``.NAME.tmp-*``) and then renamed into it, so that
    an interruption leaves no half-written file."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=staging_prefix(out), dir=out.parent))
    try:
        (staging / "results.json").write_text(json.dumps(results, indent=1))
        (staging / "results.md").write_text(table)
        figure(staging / "learning_curves.png", config, runs)
        out.mkdir(exist_ok=True)
        for name in OUTPUT_FILES:
            os.replace(staging / name, out / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def report(out_dir: str | Path) -> str:
    """Rewrite ``results.md`` (and the summary in ``results.json``) of a finished comparison from its runs."""
    out = Path(out_dir)
    results = json.loads((out / "results.json").read_text())
    values = dict(results["config"])
    values["seeds"], values["rules"] = tuple(values["seeds"]), tuple(values["rules"])
    config = CompareConfig(**values)
    results["summary"] = summarise(config, results["runs"])
    (out / "results.json").write_text(json.dumps(results, indent=1))
    text = markdown(config, results["summary"])
    (out / "results.md").write_text(text)
    return text
