"""Every learning rule of the package behind one interface, chosen by a :class:`RuleSpec` (a config value, not a
script): the weight-update direction of one batch, plus whatever the rule learns on the side (adaptive
feedback matrix, synthetic-gradient module). Used by ``eprop-l2l compare`` (:mod:`eprop_l2l.runs.rule_comparison`).

=========  =============================================================================================
kind       update
=========  =============================================================================================
bptt       exact gradient (:func:`.bptt.bptt_result`; spiking cells use the hand-written backward)
tbptt      truncated BPTT over windows of ``k`` steps, synthetic gradients at the boundaries unless
           ``synthetic_gradient=False`` (:func:`.tbptt.tbptt_grads`; Jaderberg et al. 2017)
eprop1     e-prop with ``feedback`` symmetric | random | adaptive (:func:`.eprop.eprop_fused`)
eprop3     e-prop 3: traces + learning signals by truncated BPTT + synthetic gradients (:mod:`.eprop3`)
rflo       RFLO on a leaky rate network, ``feedback`` random (Murray 2019) or symmetric (:mod:`.rflo`)
rtrl       exact RTRL (:func:`.rtrl.rtrl_grads`), small networks only
snap2      SnAp-2: RTRL keeping the influence entries of neurons two coupling steps apart (``order=2``)
ostl       OSTL: the neuron-internal influence with the exact readout gradient (BPTT of ``paths="internal"``)
superspike SuperSpike-style layer-wise traces in a feedforward network of ``layers`` spiking layers, ``feedback``
           symmetric (transposed weights) or random (broadcast) (:mod:`.superspike`)
decolle    DECOLLE: each of ``layers`` feedforward layers learns from a fixed random local readout (:mod:`.decolle`)
=========  =============================================================================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import torch

from ..cells.feedforward import FeedforwardNetwork
from ..cells.spiking import SpikingNeurons
from ..error_modules.feedback import FEEDBACK_KINDS, Feedback, set_source_grads, trainable_source_params
from ..error_modules.synthetic_gradient import SyntheticGradient
from ..errors import ConfigError, require_choice, require_count, require_positive
from .eprop import DEFAULT_PLASTIC
from .losses import Loss
from .registry import RULES, UpdateRequest, get_rule
from .regularization import RateRegularizer

ALIASES = {f"eprop1_{kind}": ("eprop1", {"feedback": kind}) for kind in FEEDBACK_KINDS}
ALIASES.update({f"eprop1-{kind}": ("eprop1", {"feedback": kind}) for kind in FEEDBACK_KINDS})
RTRL_MAX_SENSITIVITY = 4_000_000  # entries of the (dense) sensitivity matrix M (state × parameters) allowed


def rule_kinds() -> tuple[str, ...]:
    """The registered rules (inner_loop.registry) by the names compare reads: e-prop with a feedback matrix is
    ``eprop1`` (the registry's alias of ``eprop``)."""
    return tuple(name for name in RULES if name != "eprop")


@dataclass(frozen=True)
class RuleSpec:
    kind: str
    k: int = 20  # window (tbptt, eprop3)
    feedback: str = "symmetric"  # eprop1, rflo, superspike
    layers: int = 2  # superspike, decolle: feedforward layers of cell.n_rec neurons each
    synthetic_gradient: bool = True  # tbptt, eprop3: a synthetic gradient at window boundaries (else zero)
    sg_hidden: int = 0  # 0: linear synthetic-gradient module
    sg_lr: float = 1e-3
    sg_use_target: bool = True  # the module sees the target at the boundary
    label: str = ""

    def __post_init__(self):
        require_choice("rule.kind", self.kind, rule_kinds())
        require_count("rule.k", self.k)
        require_choice("rule.feedback", self.feedback, get_rule(self.kind).feedback_kinds)
        require_count("rule.layers", self.layers)
        if not isinstance(self.synthetic_gradient, bool):
            raise ConfigError("rule.sg", f"must be true or false, got {self.synthetic_gradient!r}")
        if not isinstance(self.sg_use_target, bool):
            raise ConfigError("rule.sg_use_target", f"must be true or false, got {self.sg_use_target!r}")
        require_count("rule.sg_hidden", self.sg_hidden, minimum=0)
        require_positive("rule.sg_lr", self.sg_lr)
        if not isinstance(self.label, str):
            raise ConfigError("rule.label", f"must be a string, got {self.label!r}")

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        rule = get_rule(self.kind)
        if rule.windowed:
            return f"{self.kind}(k={self.k}){'+SG' if self.synthetic_gradient else ''}"
        name = f"{self.kind}-{self.feedback}" if rule.reads_source else self.kind
        return f"{name}(L={self.layers})" if rule.network == "feedforward" else name


_OPTION_KEYS = {"k": "k", "feedback": "feedback", "layers": "layers", "sg": "synthetic_gradient",
                "sg_hidden": "sg_hidden", "sg_lr": "sg_lr", "sg_use_target": "sg_use_target", "label": "label"}


def _value(key: str, text: str):
    field_type = {f.name: f.type for f in fields(RuleSpec)}[_OPTION_KEYS[key]]
    if field_type == "int":
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ConfigError(f"rule.{key}", f"must be an integer, got {text!r}")
        return int(text)
    if field_type == "float":
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"rule.{key}", f"must be a number, got {text!r}") from None
    if field_type == "bool":
        if text.lower() not in ("true", "false", "1", "0", "yes", "no"):
            raise ConfigError(f"rule.{key}", f"must be true or false, got {text!r}")
        return text.lower() in ("true", "1", "yes")
    return text


def parse_rule(text) -> RuleSpec:
    """``"bptt"``, ``"tbptt(k=20)"``, ``"eprop3(k=10,sg=false)"``, ``"eprop1(feedback=random)"`` or the
    aliases ``eprop1_random`` etc.; a mapping ``{kind: ..., k: ...}`` (YAML) or a :class:`RuleSpec` pass too."""
    if isinstance(text, RuleSpec):
        return text
    if isinstance(text, dict):
        unknown = set(text) - {f.name for f in fields(RuleSpec)} - {"sg"}
        if unknown:
            raise ConfigError(f"rule.{sorted(unknown)[0]}", f"unknown option (choose from "
                              f"{', '.join(sorted(f.name for f in fields(RuleSpec)))})")
        values = dict(text)
        if "sg" in values:
            values["synthetic_gradient"] = values.pop("sg")
        if "kind" not in values:
            raise ConfigError("rule.kind", "missing")
        return RuleSpec(**values)
    if not isinstance(text, str):
        raise ConfigError("rule", f"must be a rule name like tbptt(k=20), got {text!r}")
    match = re.fullmatch(r"\s*([A-Za-z0-9_\-]+)\s*(?:\((.*)\))?\s*", text)
    if not match:
        raise ConfigError("rule", f"cannot read {text!r} (write e.g. bptt, tbptt(k=20), eprop1(feedback=random))")
    name, body = match.group(1), match.group(2)
    kind, values = ALIASES.get(name, (name, {}))
    require_choice("rule.kind", kind, rule_kinds() + tuple(ALIASES))
    values = dict(values)
    for item in filter(None, (s.strip() for s in (body or "").split(","))):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or key not in _OPTION_KEYS:
            raise ConfigError(f"rule.{key or item}", f"unknown option in {text!r} (choose from "
                              f"{', '.join(_OPTION_KEYS)})")
        values[_OPTION_KEYS[key]] = _value(key, raw.strip())
    if kind == "rflo" and "feedback" not in values:
        values["feedback"] = "random"  # RFLO proper
    return RuleSpec(kind, **values)


def split_rules(text: str) -> list[str]:
    """``"bptt,tbptt(k=5,sg=false),eprop3"`` → the rule strings (commas inside parentheses kept)."""
    parts, depth, current = [], 0, ""
    for ch in text:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += {"(": 1, ")": -1}.get(ch, 0)
        current += ch
    parts.append(current)
    return [p.strip() for p in parts if p.strip()]


def rtrl_size(network, batch_size: int) -> int:
    """Entries of RTRL's sensitivity matrix for ``network`` and batch: (state entries) × (parameters)."""
    cell = network.cell
    state = cell.init_state(batch_size)
    n_state = sum(f.numel() for f in state) + batch_size * network.readout.n_out
    params = network.init_params(torch.Generator().manual_seed(0))
    return n_state * sum(p.numel() for p in params.values())


class RuleRunner:
    """One rule, with its side learners, applied batch after batch to a network's parameters."""

    def __init__(self, spec: RuleSpec, network, generator: torch.Generator, dtype: torch.dtype = torch.float32,
                 regularizer: RateRegularizer | None = None, plastic: tuple[str, ...] = DEFAULT_PLASTIC,
                 lr: float = 1e-3):
        self.spec, self.network, self.regularizer, self.plastic = spec, network, regularizer, plastic
        self.rule = get_rule(spec.kind)
        n_rec, n_out = network.cell.n_rec, network.readout.n_out
        self.source, self.source_params, self.source_opt = None, {}, None
        self.sg, self.sg_params, self.sg_opt = None, {}, None
        if self.rule.cell is not None and not isinstance(network.cell, self.rule.cell):
            raise ConfigError("rule.kind", f"{spec.kind} needs the {self.rule.cell.__name__} cell, got "
                              f"{type(network.cell).__name__}")
        if (self.rule.network == "feedforward") != isinstance(network, FeedforwardNetwork):
            raise ConfigError("rule.kind", f"{spec.kind} trains a {self.rule.network} network, got "
                              f"{type(network).__name__}")
        if self.rule.make_source is not None:
            self.source = self.rule.make_source(spec.feedback, network)
        elif self.rule.reads_source:
            self.source = Feedback(spec.feedback, n_rec, n_out)
        if self.source is not None:
            self.source_params = trainable_source_params(self.source, self.source.init_params(generator, dtype))
            learned = [v for v in self.source_params.values() if v.requires_grad]
            if learned:
                self.source_opt = torch.optim.Adam(learned, lr=lr)
        if self.rule.windowed and spec.synthetic_gradient:
            self.sg = SyntheticGradient.for_network(network, spec.sg_use_target, spec.sg_hidden)
            self.sg_params = {k: v.requires_grad_() for k, v in self.sg.init_params(generator, dtype).items()}
            self.sg_opt = torch.optim.Adam(list(self.sg_params.values()), lr=spec.sg_lr)

    def update(self, params, batch, loss: Loss) -> tuple[dict, torch.Tensor, torch.Tensor, dict]:
        """(update direction per plastic parameter, trial loss, outputs y, side information)."""
        rule, info = self.rule, {}
        boundary = self.sg.boundary(self.sg_params, batch.targets) if self.sg is not None else None
        fb = {k: v.detach() for k, v in self.source_params.items()}
        # the rules that backpropagate use the spiking loop's hand-written backward; e-prop's trial the plain loop
        fast = not rule.reads_source and isinstance(self.network.cell, SpikingNeurons)
        r = rule.update(UpdateRequest(network=self.network, params=params, batch=batch, loss=loss,
                                      plastic=self.plastic, regularizer=self.regularizer,
                                      source=self.source, source_params=fb, fast=fast, window=self.spec.k,
                                      boundary=boundary))
        if self.sg is not None and r.boundary_steps:
            with torch.enable_grad():
                sg_loss = self.sg.loss(self.sg_params, r, batch.targets)
                self.sg_opt.zero_grad()
                sg_loss.backward()
            self.sg_opt.step()
            info["sg_loss"] = float(sg_loss)
        if self.source_opt is not None:
            set_source_grads(self.source, self.source_params, r.grads)
            self.source_opt.step()
        return r.grads, r.loss, r.outputs, info

