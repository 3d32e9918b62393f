"""The configuration of a rule comparison (``eprop-l2l compare``): :class:`CompareConfig`, a structured config
(OmegaConf refuses unknown keys and wrong types when a preset, a YAML file and ``key=value`` overrides are merged
onto it), its presets (:data:`PRESETS`) and :func:`load_config`.

Each rule is a :class:`~eprop_l2l.inner_loop.rules.RuleSpec` — ``bptt``, ``tbptt(k=…)``, ``eprop1(feedback=…)``,
``eprop3(k=…)``, ``rflo``, ``rtrl``, ``snap2``, ``ostl``, and the feedforward rules ``superspike(feedback=…,layers=…)``
and ``decolle(layers=…)`` (``layers`` layers of ``cell.n_rec`` spiking cells each) — written in the rule grammar of
:func:`~eprop_l2l.inner_loop.rules.parse_rule` (on the command line: ``rules=bptt,tbptt(k=5)``) or as mappings
(``{kind: eprop3, k: 5}``) in a YAML file.
Impossible values are refused by the components (task family, cell, readout) when the configuration is built,
each error naming its key; the running of a comparison is :mod:`eprop_l2l.runs.rule_comparison`'s.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ConfigTypeError, OmegaConfBaseException

from ..cells import make_cell
from ..cells.feedforward import LAYER_CELLS, FeedforwardNetwork
from ..cells.network import RecurrentNetwork
from ..cells.rate import RateRNN
from ..cells.readout import LeakyReadout
from ..errors import ConfigError, require_count, require_non_negative, require_positive
from ..inner_loop.registry import get_rule
from ..inner_loop.rules import RTRL_MAX_SENSITIVITY, RuleSpec, parse_rule, rtrl_size, split_rules
from ..task_families import make_task_family
from ..units import DEFAULT_STEP_MS
from .compose import config_error_line

DTYPES = {"float32": torch.float32, "float64": torch.float64}
# the largest value of each count (checked before anything is built, as train checks config.schema.LIMITS): a
# comparison runs on one CPU core per rule, so these are far above anything that finishes, and far below what
# would allocate or loop for ever without a word
LIMITS = {"iterations": 1_000_000, "batch_size": 100_000, "eval_batch": 100_000, "eval_every": 1_000_000,
          "max_pattern_length": 10_000, "seeds": 1_000, "rules": 100, "cell.n_rec": 100_000,
          "task.n_steps": 1_000_000, "task.n_in": 100_000, "task.n_out": 100_000}
# the command line's short prefixes of the three field mappings: task.n_bits=3 is task_fields.n_bits=3
FIELD_GROUPS = {"task": "task_fields", "cell": "cell_fields", "readout": "readout_fields"}


@dataclass(frozen=True)
class CompareConfig:
    task: str = "copy_repeat"
    task_fields: dict[str, Any] = field(default_factory=dict)
    cell: str = "lstm"
    cell_fields: dict[str, Any] = field(default_factory=dict)
    readout_fields: dict[str, Any] = field(default_factory=dict)
    rate_tau: float = 10.0  # the rate network that RFLO trains (same n_rec), τ in ms
    dt_ms: float = DEFAULT_STEP_MS  # the one time step of the task, the cells and the readout
    # rule strings or mappings (parse_rule), or one string of them (split_rules); RuleSpecs once constructed
    rules: Any = ("bptt", "tbptt(k=10)", "eprop1(feedback=symmetric)", "eprop3(k=10)")
    iterations: int = 100
    batch_size: int = 16
    lr: float = 1e-3
    seeds: Any = (0,)  # one seed or several; a tuple once constructed
    eval_batch: int = 64
    eval_every: int = 10
    reg_coefficient: float = 0.0  # firing-rate regulariser (spiking cells)
    reg_target_hz: float = 10.0
    curriculum: bool = False
    solve_threshold: float = 0.02
    max_pattern_length: int = 40
    isolate: bool = False
    dtype: str = "float32"
    memory_check: bool = True  # refuse up front a comparison whose estimate exceeds the available memory

    def __post_init__(self):
        for key in FIELD_GROUPS.values():
            if not isinstance(getattr(self, key), dict):
                raise ConfigError(key, f"must be a mapping, got {getattr(self, key)!r}")
        require_positive("rate_tau", self.rate_tau)
        require_positive("dt_ms", self.dt_ms)
        for key in FIELD_GROUPS.values():
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
        for key in ("iterations", "batch_size", "eval_batch", "eval_every", "max_pattern_length"):
            _require_at_most(key, getattr(self, key))
        for key in ("curriculum", "isolate", "memory_check"):
            if not isinstance(getattr(self, key), bool):
                raise ConfigError(key, f"must be true or false, got {getattr(self, key)!r}")
        if self.dtype not in DTYPES:
            raise ConfigError("dtype", f"unknown value {self.dtype!r} (choose from {', '.join(DTYPES)})")
        seeds = (self.seeds,) if isinstance(self.seeds, int) else tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ConfigError("seeds", f"must be one or more integers >= 0, got {self.seeds!r}")
        object.__setattr__(self, "seeds", seeds)
        _require_at_most("seeds", len(seeds), "seeds")
        rules = split_rules(self.rules) if isinstance(self.rules, str) else list(self.rules)
        if not rules:
            raise ConfigError("rules", "name at least one rule")
        _require_at_most("rules", len(rules), "rules")
        specs = tuple(parse_rule(r) for r in rules)
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ConfigError("rules", f"two rules have the same name ({', '.join(names)}); give one a label")
        object.__setattr__(self, "rules", specs)
        if self.curriculum and self.task != "copy_repeat":
            raise ConfigError("curriculum", f"grows copy-repeat's pattern length; task is {self.task!r}")
        family = self.family()  # validates the task fields (a family is a record: its trials are drawn later)
        _check_family_size(family, self.task_fields)
        _require_at_most("cell.n_rec", self.cell_fields.get("n_rec", 0))
        for spec in specs:
            network = self.network(family, spec)  # validates the cell fields
            if get_rule(spec.kind).influence:
                size = rtrl_size(network, self.batch_size)
                if size > RTRL_MAX_SENSITIVITY:
                    raise ConfigError("rules", f"{spec.kind}: sensitivity matrix of {size:,} entries > "
                                      f"{RTRL_MAX_SENSITIVITY:,} (small sizes only: lower cell.n_rec or batch_size)")

    # --- builders ------------------------------------------------------------------------------------------
    def family(self, **changes):
        return make_task_family(self.task, **{**self.task_fields, **changes}, dt_ms=self.dt_ms)

    def network(self, family, spec: RuleSpec) -> RecurrentNetwork | FeedforwardNetwork:
        fields = dict(self.cell_fields)
        n_rec = fields.pop("n_rec", 32)
        rule = get_rule(spec.kind)
        if rule.network == "feedforward":  # layers of the configured spiking cell, n_rec neurons each
            if self.cell not in LAYER_CELLS:
                cells = ", ".join(LAYER_CELLS)
                raise ConfigError("cell", f"{spec.kind} trains layers of spiking cells ({cells}), got {self.cell!r}")
            return FeedforwardNetwork.of_cells(
                lambda **size: make_cell(self.cell, **size, **fields, dt_ms=self.dt_ms), family.n_in,
                (n_rec,) * spec.layers, lambda n: self.make_readout(n, family))
        if rule.cell is RateRNN:  # RFLO: the rate network
            cell = make_cell("rate", n_in=family.n_in, n_rec=n_rec, tau=self.rate_tau, dt_ms=self.dt_ms)
        else:
            if self.cell != "lstm":  # the LSTM has no time constants
                fields["dt_ms"] = self.dt_ms
            cell = make_cell(self.cell, n_in=family.n_in, n_rec=n_rec, **fields)
        return RecurrentNetwork(cell, self.make_readout(cell.n_rec, family))

    def make_readout(self, n_in: int, family) -> LeakyReadout:
        try:
            return LeakyReadout(n_in, family.n_out, **self.readout_fields, dt_ms=self.dt_ms)
        except TypeError as err:
            raise ConfigError("readout_fields", str(err)) from None

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["rules"] = [dataclasses.asdict(s) for s in self.rules]
        out["seeds"] = list(self.seeds)
        return out


def _require_at_most(key: str, value, what: str | None = None) -> None:
    limit = LIMITS[key]
    if isinstance(value, int) and not isinstance(value, bool) and value > limit:
        counted = f"{value:,} {what}" if what else f"{value:,}"
        raise ConfigError(key, f"{counted} is above the limit of {limit:,} (a comparison of that size would not "
                          "finish)")


def _check_family_size(family, task_fields: dict) -> None:
    """The trial length and the input and output sizes the task fields lead to, named by the fields that set
    them (``task.n_steps`` is derived in most families: ``pattern_length``, ``frame_steps``, ...)."""
    numbers = {k: v for k, v in task_fields.items() if isinstance(v, int) and not isinstance(v, bool)}
    for size in ("n_steps", "n_in", "n_out"):
        value = getattr(family, size, None)
        limit = LIMITS[f"task.{size}"]
        if isinstance(value, int) and value > limit:
            culprit = size if size in numbers else max(numbers, key=numbers.get, default=size)
            raise ConfigError(f"task.{culprit}", f"a trial of {size} = {value:,} is above the limit of {limit:,} "
                              f"(lower task.{culprit})")


# ------------------------------------------------------------------------------------------------ presets
PRESETS: dict[str, dict] = {
    # the test setting: seconds per rule
    "tiny": dict(task="copy_repeat", task_fields=dict(n_bits=3, pattern_length=2, n_repeats=1, frame_steps=2),
                 cell="lstm", cell_fields=dict(n_rec=8), iterations=6, batch_size=4, eval_batch=8, eval_every=3,
                 lr=1e-2, rules=("bptt", "tbptt(k=3)", "eprop1(feedback=symmetric)", "eprop1(feedback=random)",
                                 "eprop1(feedback=adaptive)", "eprop3(k=3)", "rflo", "rtrl", "snap2", "ostl")),
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


def _unknown_option(key: str) -> ConfigError:
    known = sorted(f.name for f in dataclasses.fields(CompareConfig) if f.name not in FIELD_GROUPS.values())
    return ConfigError(key, f"unknown option (choose from {', '.join(known)}, task.<field>, cell.<field>, "
                       "readout.<field>)")


def _one_line_error(err: OmegaConfBaseException) -> ConfigError:
    if isinstance(err, ConfigAttributeError | ConfigKeyError):  # struct mode: a key the schema does not have
        return _unknown_option(err.full_key or "config")
    return config_error_line(err)


def _preset(preset: str):
    """The values a comparison starts from: a preset's, or a YAML file's (a mapping of CompareConfig keys)."""
    if preset in PRESETS:
        return PRESETS[preset]
    if not str(preset).endswith((".yaml", ".yml")):
        raise ConfigError("config", f"unknown preset {preset!r} (choose from {', '.join(PRESETS)}, or a .yaml file)")
    path = Path(preset)
    if not path.is_file():
        raise ConfigError("config", f"no such file {str(path)!r}")
    try:
        values = OmegaConf.load(path)
    except OSError:  # OmegaConf's refusal of a document that is not a mapping or a list
        values = None
    except Exception as err:  # yaml's parser and scanner errors
        raise ConfigError("config", f"{path} is not valid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(values, DictConfig):
        raise ConfigError("config", f"{path} must hold a mapping of compare options")
    return values


def _override(config: DictConfig, item: str) -> None:
    """One ``key=value`` onto ``config``: the value replaces the key's (``task_fields={}`` empties the task's
    fields); ``task.<field>`` etc. set one field of a mapping."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(item, "expected key=value")
    head, dot, rest = key.partition(".")
    path = f"{FIELD_GROUPS[head]}.{rest}" if dot and head in FIELD_GROUPS else key
    # the value as YAML (OmegaConf's reading), except the rule list: that is the rule grammar, bptt,tbptt(k=5)
    value = text if path == "rules" else OmegaConf.select(OmegaConf.from_dotlist([f"{path}={text}"]), path)
    OmegaConf.update(config, path, value, merge=False)


def load_config(preset: str = "tiny", overrides: list[str] | tuple[str, ...] = ()) -> CompareConfig:
    """A preset name or a YAML file, then ``key=value`` overrides (``task.<field>=``, ``cell.<field>=``,
    ``readout.<field>=``, ``rules=bptt,tbptt(k=5)``, ``seeds=[0,1]``, ...). Every bad key or value raises a
    one-line :class:`ConfigError` naming it."""
    values = _preset(preset)
    schema = OmegaConf.structured(CompareConfig)
    OmegaConf.set_readonly(schema, False)  # a frozen dataclass makes a read-only config; the overrides write it
    try:
        config = OmegaConf.merge(schema, values)
        for item in overrides:
            _override(config, item)
        return OmegaConf.to_object(config)
    except ConfigTypeError as err:  # a TypeError in construction, e.g. a field the constructors reject by type
        cause = err.__cause__ or err.__context__
        if isinstance(cause, TypeError):
            raise ConfigError("config", str(cause)) from None
        raise _one_line_error(err) from None
    except OmegaConfBaseException as err:
        raise _one_line_error(err) from None
