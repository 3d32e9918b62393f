"""Every learning rule of the package, registered once: what it computes from one trial and what it is.

A rule turns one trial into a weight-update direction (same sign as a gradient) for the plastic weights. All
of them take the same keyword-only :class:`UpdateRequest` (the task batch whole, the loss, the plastic names,
and the options a rule may read) and return the e-prop rules' result record. What a rule *is* decides where it
may be used, and nobody else writes that down:

- ``reads_source``: its learning signal comes from a signal source (feedback matrix, learned error module); the
  others compute their signals from the loss alone, so they are given only what the loss reads;
- ``local``: online and local in time (eligibility traces × a learning signal), the rules a learning engine
  can run (``hardware``);
- ``one_shot``: it can be the inner loop of meta-learning: one update per task from shared weights, and
  differentiable by the outer loop (``meta.MetaLearner``);
- ``network``: the network it trains — ``"recurrent"`` (one cell and its readout) or ``"feedforward"`` (layers
  of spiking cells, :class:`~eprop_l2l.cells.feedforward.FeedforwardNetwork`); ``make_source`` draws the fixed
  matrices a rule brings for its network (per-layer feedback, local readouts) where the plain feedback matrix of
  ``reads_source`` does not fit, and ``feedback_kinds`` are the feedback options it takes.

``MetaLearner``, the plain training loop (``train.py``), ``compare`` (``rules.RuleRunner``), the resource
estimate and the exporter dispatch through :data:`RULES`. A new rule is one :func:`register` call beside its
own module (``docs/architecture.md`` shows the smallest one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ..cells.base import Params
from ..cells.rate import RateRNN
from ..error_modules.feedback import FEEDBACK_KINDS
from ..error_modules.layer_feedback import LAYER_FEEDBACK_KINDS, LayerFeedback
from ..error_modules.local_readouts import LocalReadouts
from ..errors import require_choice
from ..task_families.base import TaskBatch
from .bptt import bptt_result
from .decolle import decolle_grads
from .eprop import DEFAULT_PLASTIC, EpropResult, eprop_fused
from .eprop3 import eprop3_grads
from .losses import Loss
from .regularization import RateRegularizer
from .rflo import rflo_fused
from .rtrl import rtrl_grads
from .superspike import superspike_grads
from .tbptt import tbptt_grads


@dataclass(frozen=True, kw_only=True)
class UpdateRequest:
    """One trial's update, as every rule is asked for it."""

    network: object
    params: Params
    batch: TaskBatch
    loss: Loss
    target: torch.Tensor | None = None  # what the loss compares the output with; None: batch.targets
    plastic: tuple[str, ...] = DEFAULT_PLASTIC
    regularizer: RateRegularizer | None = None
    source: object = None  # the learning-signal source of the rules that read one
    source_params: Params | None = None
    source_drive: torch.Tensor | None = None  # a learned source's input current, computed once per batch
    kappa: float | None = None  # e-prop's trace filter (None: the readout's κ)
    fast: bool = False  # spiking time loops with the hand-written backward
    per_task: bool | None = None  # one update per task from shared weights
    create_graph: bool = False  # keep the update differentiable (second-order meta-gradients)
    window: int = 20  # truncated rules: steps per window
    boundary: Callable | None = None  # truncated rules: the gradient at a window boundary (None: zero)

    @property
    def trial_target(self) -> torch.Tensor:
        return self.batch.targets if self.target is None else self.target


@dataclass(frozen=True)
class Rule:
    name: str
    update: Callable[[UpdateRequest], EpropResult]
    summary: str
    reads_source: bool = False
    local: bool = False
    one_shot: bool = False
    windowed: bool = False  # runs in windows of ``UpdateRequest.window`` steps with boundary gradients
    influence: bool = False  # holds the dense influence matrix of the forward recursion (small networks only)
    cell: type | None = None  # the cell class the rule needs (None: any cell of the library)
    network: str = "recurrent"  # the network it trains: "recurrent" | "feedforward"
    feedback_kinds: tuple[str, ...] = FEEDBACK_KINDS  # the feedback options of a rule that reads a source
    make_source: Callable | None = None  # (feedback kind, network) -> the rule's own fixed matrices; None: Feedback
    aliases: tuple[str, ...] = ()


RULES: dict[str, Rule] = {}


def register(rule: Rule) -> Rule:
    """Add ``rule`` under its name and aliases (a name already taken is an error: one rule per name)."""
    for name in (rule.name, *rule.aliases):
        if name in RULES:
            raise ValueError(f"a rule named {name!r} is already registered")
        RULES[name] = rule
    return rule


def get_rule(name: str, key: str = "rule.kind") -> Rule:
    """The rule registered as ``name``; a one-line ConfigError on ``key`` for any other name."""
    require_choice(key, name, tuple(RULES))
    return RULES[name]


def rule_names(**properties: bool) -> tuple[str, ...]:
    """The rules' own names (no aliases) with the given properties, e.g. ``rule_names(one_shot=True)``."""
    return tuple(name for name, rule in RULES.items() if name == rule.name
                 and all(getattr(rule, k) == v for k, v in properties.items()))


def _superspike(request: UpdateRequest) -> EpropResult:
    r, b = request, request.batch
    return superspike_grads(r.network, r.params, b.inputs, r.trial_target, b.mask, r.loss, r.source, r.source_params,
                            regularizer=r.regularizer, plastic=r.plastic, fast=r.fast)


def _decolle(request: UpdateRequest) -> EpropResult:
    r, b = request, request.batch
    return decolle_grads(r.network, r.params, b.inputs, r.trial_target, b.mask, r.loss, r.source, r.source_params,
                         regularizer=r.regularizer, plastic=r.plastic, fast=r.fast)


def _eprop(request: UpdateRequest, fused=eprop_fused) -> EpropResult:
    r, b = request, request.batch
    return fused(r.network, r.params, b.inputs, r.trial_target, b.mask, r.loss, r.source,
                 source_params=r.source_params, regularizer=r.regularizer, plastic=r.plastic, kappa=r.kappa,
                 context=b.context, fast=r.fast, per_task=r.per_task, source_drive=r.source_drive)


def _bptt(request: UpdateRequest, paths: str = "full") -> EpropResult:
    r, b = request, request.batch
    return bptt_result(r.network, r.params, b.inputs, r.trial_target, b.mask, r.loss, plastic=r.plastic,
                       regularizer=r.regularizer, paths=paths, create_graph=r.create_graph,
                       fast=r.fast and not r.create_graph, per_task=bool(r.per_task))


def _truncated(grads):
    def update(request: UpdateRequest):
        r, b = request, request.batch
        return grads(r.network, r.params, b.inputs, r.trial_target, b.mask, r.loss, r.window, r.boundary,
                     r.regularizer, r.plastic)
    return update


def _influence(order: int | None):
    """The forward recursion over the influence matrix (:mod:`.rtrl`), all of it or the entries ``order`` keeps."""
    def update(request: UpdateRequest) -> EpropResult:
        # the reference of the family runs in float64 (its forward-mode Jacobians are taken there)
        r, b = request, request.batch
        x = b.inputs
        f64 = {k: v.double() for k, v in r.params.items()}
        grads, value = rtrl_grads(r.network, f64, x.double(), r.trial_target.double(), b.mask.double(), r.loss,
                                  r.regularizer, r.plastic, order=order)
        with torch.no_grad():
            y = r.network.run(r.params, x)[1]
        return EpropResult({k: v.to(x.dtype) for k, v in grads.items()}, value.to(x.dtype), y, None, None)
    return update


register(Rule("eprop", _eprop, "eligibility traces × a learning signal from the signal source (e-prop 1 with "
              "a feedback matrix, e-prop 2 with a learned error module)", reads_source=True, local=True,
              one_shot=True, aliases=("eprop1",)))
register(Rule("bptt", _bptt, "the exact gradient by backpropagation through time (MAML's step as an inner "
              "loop)", one_shot=True))
register(Rule("tbptt", _truncated(tbptt_grads), "truncated BPTT over windows, a synthetic gradient at the "
              "boundaries", windowed=True))
register(Rule("eprop3", _truncated(eprop3_grads), "e-prop 3: traces × learning signals by truncated BPTT and "
              "synthetic gradients", windowed=True))
register(Rule("rflo", lambda request: _eprop(request, rflo_fused), "RFLO on a leaky rate network (Murray 2019)",
              reads_source=True, local=True, cell=RateRNN))
register(Rule("rtrl", _influence(None), "exact real-time recurrent learning (small networks only)", influence=True))
register(Rule("snap2", _influence(2), "SnAp-2: RTRL keeping the influence of neurons two coupling steps away (the "
              "pattern of W_rec; Menick et al. 2021)", influence=True))
# OSTL's gradient, computed in reverse mode: the BPTT of the cells' "internal" paths equals its forward form (the
# neuron-internal influence entries, rtrl order=1; tests/test_influence_family.py), at any size
register(Rule("ostl", lambda request: _bptt(request, "internal"), "OSTL: the neuron-internal (temporal) influence, "
              "reset included, × the exact spatial gradient through the readout (Bohnstingl et al. 2022); exact "
              "without lateral recurrence", one_shot=True))
register(Rule("superspike", _superspike, "SuperSpike-style layer-wise traces × the output error, fed back "
              "through the transposed weights or broadcast by a fixed random matrix per layer (Zenke & Ganguli "
              "2018)", reads_source=True, local=True, network="feedforward", feedback_kinds=LAYER_FEEDBACK_KINDS,
              make_source=lambda kind, network: LayerFeedback(kind, network.sizes, network.readout.n_out)))
register(Rule("decolle", _decolle, "DECOLLE: every layer learns from its own local loss through a fixed random "
              "readout, no gradient crosses a layer (Kaiser et al. 2020)", local=True, network="feedforward",
              make_source=lambda kind, network: LocalReadouts(network.sizes, network.readout)))
