"""``eprop-l2l compare``: every learning rule on one task family and cell, with the same seeds and budget.

A comparison is a :class:`CompareConfig` (a preset of :data:`PRESETS`, a YAML file, plus ``key=value``
overrides). Each rule is a :class:`~eprop_l2l.inner_loop.rules.RuleSpec` — ``bptt``, ``tbptt(k=…)``,
``eprop1(feedback=…)``, ``eprop3(k=…)``, ``rflo``, ``rtrl`` — never a script of its own. For every (rule, seed)
the network starts from the same initial weights (drawn from ``seed``), sees the same training batches (a
generator seeded from ``seed``) and is evaluated on the same held-out batch, for ``iterations`` Adam steps.

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
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .cells import make_cell
from .cells.network import RecurrentNetwork
from .cells.rate import RateRNN
from .cells.readout import LeakyReadout
from .errors import ConfigError, require_count, require_non_negative, require_positive
from .inner_loop.losses import Loss
from .inner_loop.metrics import classification_error, normalised_mse
from .inner_loop.registry import get_rule
from .inner_loop.regularization import RateRegularizer
from .inner_loop.rules import RTRL_MAX_SENSITIVITY, RuleRunner, RuleSpec, parse_rule, rtrl_size, split_rules
from .task_families import make_task_family
from .units import DEFAULT_STEP_MS

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass(frozen=True)
class CompareConfig:
    task: str = "copy_repeat"
    task_fields: dict = field(default_factory=dict)
    cell: str = "lstm"
    cell_fields: dict = field(default_factory=dict)
    readout_fields: dict = field(default_factory=dict)
    rate_tau: float = 10.0  # the rate network that RFLO trains (same n_rec), τ in ms
    dt_ms: float = DEFAULT_STEP_MS  # the one time step of the task, the cells and the readout
    rules: tuple = ("bptt", "tbptt(k=10)", "eprop1(feedback=symmetric)", "eprop3(k=10)")
    iterations: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    seeds: tuple = (0,)
    eval_batch: int = 64
    eval_every: int = 10
    reg_coefficient: float = 0.0  # firing-rate regulariser (spiking cells)
    reg_target_hz: float = 10.0
    curriculum: bool = False
    solve_threshold: float = 0.02
    max_pattern_length: int = 40
    isolate: bool = False
    dtype: str = "float32"

    def __post_init__(self):
        for key in ("task_fields", "cell_fields", "readout_fields"):
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(key, f"must be a mapping, got {getattr(self, key)!r}")
        require_positive("rate_tau", self.rate_tau)
        require_positive("dt_ms", self.dt_ms)
        for key in ("task_fields", "cell_fields", "readout_fields"):
            if {"dt", "dt_ms", "dt_s"} & getattr(self, key).keys():
                raise ConfigError(f"{key}.dt_ms", "the time step is set once, by the top-level dt_ms")
        require_count("iterations", self.iterations)
        require_count("batch_size", self.batch_size)
        require_positive("lr", self.lr)
        require_count("eval_batch", self.eval_batch)
        require_count("eval_every", self.eval_every)
        require_non_negative("reg_coefficient", self.reg_coefficient)
        require_non_negative("reg_target_hz", self.reg_target_hz)
        require_non_negative("solve_threshold", self.solve_threshold)
        require_count("max_pattern_length", self.max_pattern_length)
        for key in ("curriculum", "isolate"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"unknown value {self.dtype!r} (choose from {', '.join(DTYPES)})")
        seeds = (self.seeds,) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError("seeds", f"must be one or more integers >= 0, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)
        rules = split_rules(self.rules) if isinstance(self.rules, str) else list(self.rules)
        if not rules:
            raise ConfigError("rules", "name at least one rule")
        specs = tuple(parse_rule(r) for r in rules)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError("rules", f"two rules have the same name ({', '.join(names)}); give one a label")
        object.__setattr__(self, "rules", specs)
        if self.curriculum and self.task != "copy_repeat":
            raise ConfigError("curriculum", f"grows copy-repeat's pattern length; task is {self.task!r}")
        family = self.family()  # validates the task fields
        for spec in specs:
            network = self.network(family, spec)  # validates the cell fields
            if spec.kind == "rtrl":
                size = rtrl_size(network, self.batch_size)
                if size > RTRL_MAX_SENSITIVITY:
                    raise ConfigError("rules", f"rtrl: sensitivity matrix of {size:,} entries > "
                                      f"{RTRL_MAX_SENSITIVITY:,} (small sizes only: lower cell.n_rec or batch_size)")

    # --- builders ------------------------------------------------------------------------------------------
    def family(self, **changes):
        return make_task_family(self.task, **{**self.task_fields, **changes}, dt_ms=self.dt_ms)

    def network(self, family, spec: RuleSpec) -> RecurrentNetwork:
        fields = dict(self.cell_fields)
        n_rec = fields.get("n_rec", 32)
        if get_rule(spec.kind).cell is RateRNN:  # RFLO: the rate network
            cell = make_cell("rate", n_in=family.n_in, n_rec=n_rec, tau=self.rate_tau, dt_ms=self.dt_ms)
        else:
            fields.setdefault("n_rec", n_rec)
            if self.cell != "lstm":  # the LSTM has no time constants
                fields["dt_ms"] = self.dt_ms
            cell = make_cell(self.cell, n_in=family.n_in, **fields)
        try:
            readout = LeakyReadout(cell.n_rec, family.n_out, **self.readout_fields, dt_ms=self.dt_ms)
        except TypeError as err:
            raise ConfigError("readout_fields", str(err)) from None
        return RecurrentNetwork(cell, readout)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rules"] = [dataclasses.asdict(s) for s in self.rules]
        out["seeds"] = list(self.seeds)
        return out


# ------------------------------------------------------------------------------------------------ presets
PRESETS: dict[str, dict] = {
    # the test setting: seconds per rule
    "tiny": dict(task="copy_repeat", task_fields=dict(n_bits=3, pattern_length=2, n_repeats=1, frame_steps=2),
                 cell="lstm", cell_fields=dict(n_rec=8), iterations=6, batch_size=4, eval_batch=8, eval_every=3,
                 lr=1e-2, rules=("bptt", "tbptt(k=3)", "eprop1(feedback=symmetric)", "eprop1(feedback=random)",
                                 "eprop1(feedback=adaptive)", "eprop3(k=3)", "rflo", "rtrl")),
    # copy-repeat with an LSTM (the task of e-prop 3's copy-repeat figure, at CPU sizes), curriculum on L
    "copy_repeat_lstm": dict(task="copy_repeat", task_fields=dict(n_bits=4, pattern_length=2, n_repeats=2,
                                                                  frame_steps=1),
                             cell="lstm", cell_fields=dict(n_rec=64), readout_fields=dict(tau_out=0.1),
                             iterations=1500, batch_size=16, lr=1e-2, eval_every=25, curriculum=True,
                             rules=("bptt", "tbptt(k=4,sg=false)", "tbptt(k=4)", "eprop1(feedback=symmetric)",
                                    "eprop1(feedback=random)", "eprop3(k=4,sg=false)", "eprop3(k=4)")),
    # copy-repeat with ALIF neurons (100, 40 % adaptive): frames of 10 steps
    "copy_repeat_alif": dict(task="copy_repeat", task_fields=dict(n_bits=4, pattern_length=2, n_repeats=2,
                                                                  frame_steps=10),
                             cell="alif", cell_fields=dict(n_rec=100, n_adaptive=40, tau_a=400.0, beta=1.0,
                                                           v_th=0.3, n_ref=2, tau_m=20.0),
                             readout_fields=dict(tau_out=5.0), iterations=400, batch_size=16, lr=5e-3,
                             eval_every=20, curriculum=True, reg_coefficient=0.1,
                             rules=("bptt", "tbptt(k=20,sg=false)", "tbptt(k=20)", "eprop1(feedback=symmetric)",
                                    "eprop1(feedback=random)", "eprop3(k=20,sg=false)", "eprop3(k=20)")),
    # store-recall (Bellec et al. 2019: 100 neurons, 40 % ALIF, 4 channels at 50 Hz, 200-ms symbols), shortened:
    # 60-ms symbols, recall 2-4 symbols after the store, 5 neurons per channel at 100 Hz
    "store_recall_alif": dict(task="store_recall",
                              task_fields=dict(n_symbols=6, symbol_ms=60.0, min_delay=2, max_delay=4,
                                               input_rate_hz=100.0, neurons_per_channel=5),
                              cell="alif", cell_fields=dict(n_rec=100, n_adaptive=40, tau_a=400.0, beta=1.0,
                                                            v_th=0.3, n_ref=2, tau_m=20.0),
                              readout_fields=dict(tau_out=20.0), iterations=200, batch_size=32, lr=1e-2,
                              eval_every=10, reg_coefficient=0.1,
                              rules=("bptt", "tbptt(k=60,sg=false)", "tbptt(k=60)", "eprop1(feedback=symmetric)",
                                     "eprop1(feedback=random)", "eprop1(feedback=adaptive)", "eprop3(k=60,sg=false)",
                                     "eprop3(k=60)")),
}


def _read_yaml(path: Path) -> dict:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError("config", f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError("config", f"{path} must hold a mapping of compare options")
    return data


def _parse_value(key: str, text: str):
    import yaml

    if key == "rules":
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def load_config(preset: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> CompareConfig:
    """A preset name or a YAML file, then ``key=value`` overrides (``task.<field>=``, ``cell.<field>=``,
    ``readout.<field>=``, ``rules=bptt,tbptt(k=5)``, ``seeds=[0,1]``, ...). Every bad key or value raises a
    one-line :class:`ConfigError` naming it."""
    if preset in PRESETS:
        values = {k: (dict(v) if isinstance(v, dict) else v) for k, v in PRESETS[preset].items()}
    elif str(preset).endswith((".yaml", ".yml")):
        path = Path(preset)
        if not path.is_file():
            raise ConfigError("config", f"no such file {str(path)!r}")
        values = _read_yaml(path)
    else:
        raise ConfigError("config", f"unknown preset {preset!r} (choose from {', '.join(PRESETS)}, or a .yaml file)")
    known = {f.name for f in dataclasses.fields(CompareConfig)}
    groups = {"task": "task_fields", "cell": "cell_fields", "readout": "readout_fields"}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(item, "expected key=value")
        head, dot, rest = key.partition(".")
        if dot and head in groups:
            values.setdefault(groups[head], {})
            values[groups[head]] = {**values[groups[head]], rest: _parse_value(key, text)}
        elif key in known:
            values[key] = _parse_value(key, text)
        else:
            raise ConfigError(key, f"unknown option (choose from {', '.join(sorted(known - set(groups.values())))}, "
                              "task.<field>, cell.<field>, readout.<field>)")
    unknown = set(values) - known
    if unknown:
        raise ConfigError(sorted(unknown)[0], f"unknown option (choose from {', '.join(sorted(known))})")
    for key in ("task_fields", "cell_fields", "readout_fields"):
        if values.get(key) is None:
            values[key] = {}
    if isinstance(values.get("seeds"), list):
        values["seeds"] = tuple(values["seeds"])
    if isinstance(values.get("rules"), list):
        values["rules"] = tuple(values["rules"])
    try:
        return CompareConfig(**values)
    except TypeError as err:  # e.g. an unknown cell or task field that the constructors reject by type
        raise ConfigError("config", str(err)) from None


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
    from .runtime import configure_cpu

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
    plastic = tuple(n for n in ("w_in", "w_rec", "bias", "w_out", "b_out") if n in params)  # LSTM: bias too
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
    into ``out_dir`` (created; existing files of these names are replaced) and return the results."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
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
    (out / "results.json").write_text(json.dumps(results, indent=1))
    (out / "results.md").write_text(markdown(config, rows))
    figure(out / "learning_curves.png", config, runs)
    return results


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


def main(preset: str, overrides: list[str], out: str | None) -> int:
    config = load_config(preset, overrides)
    out_dir = Path(out or f"runs/compare/{Path(preset).stem}")
    results = compare(config, out_dir)
    print(markdown(config, results["summary"]), end="")
    print(f"results: {out_dir.resolve()}/results.{{md,json}}, learning_curves.png")
    return 0
