"""The records of the rule description (``rule.json``): typed, frozen, keyword-only, each with ``to_dict`` /
``from_dict``.

This module uses the standard library only (no torch, no numpy; Python 3.10), so that both readers share the one
schema: the torch side (:mod:`.rule`: :func:`~.rule.describe`, the files, the rebuilt model) and the Lava program
(:mod:`.lava.artefacts`, CPython 3.10 without torch). The neuron and readout constants stay the records of
:mod:`eprop_l2l.cells.spec` (``NeuronSpec.to_dict()``, ``ReadoutSpec.to_dict()``), held here as those dicts:
``cells`` imports torch when it is imported, and :func:`.rule.learner_neurons` turns them back into specs.

``from_dict`` refuses a missing, unknown or mistyped key with one :class:`ExportError` line naming the file and
the key's path (``rule.json: plastic[1].trace.decay: must be a number, got 'x'``). ``docs/export.md`` explains
every field.

One name per quantity: the inner learning rate is :attr:`RuleDescription.inner_lr` (config ``inner.lr``), as in
the rest of the package. Its key in the file is ``eta`` (η of the update ``W ← W − η·tag``), as it has been since
format version 1, so every export stays readable without a conversion; :data:`FILE_KEYS` is the one place that
maps field names to file keys.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field

from ..errors import ConfigError

FORMAT_VERSION = 1
RULE_FILE = "rule.json"
# the weights beside the description (weights.npz): the learning network's, then the error module's
WEIGHTS_FILE = "weights.npz"
LEARNER_WEIGHTS = ("w_in", "w_rec", "w_out")
MODULE_WEIGHTS = ("em_w_in", "em_w_rec", "em_proj")
NUMBER_KINDS = ("float32", "fixed")
# a record's field → its key in rule.json, where the two differ
FILE_KEYS = {"inner_lr": "eta"}


class ExportError(ConfigError):
    """A model or artefact the export cannot handle; ``str(err)`` is one line naming the construct."""


# --- reading one record ---------------------------------------------------------------------------------------
def _type_name(value) -> str:
    return type(value).__name__


def _value(hint, value, where: str, key: str):
    """``value`` read as the field type ``hint`` (a record, a tuple, or a JSON scalar or object)."""
    if dataclasses.is_dataclass(hint):
        return hint.from_dict(value, where=where, key=key)
    if typing.get_origin(hint) is tuple:
        if not isinstance(value, (list, tuple)):
            raise ExportError(where, f"{key}: must be a list, got {_type_name(value)}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        elif len(value) != len(args):
            raise ExportError(where, f"{key}: must have {len(args)} entries, got {len(value)}")
        return tuple(_value(a, v, where, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ExportError(where, f"{key}: must be a number, got {value!r}")
        return value  # as written: an integer stays one, so a re-saved file is byte-identical
    if hint is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ExportError(where, f"{key}: must be an integer, got {value!r}")
    if not isinstance(value, hint):
        raise ExportError(where, f"{key}: must be {hint.__name__}, got {_type_name(value)}")
    return value


def _read(cls, record, where: str, key: str) -> dict:
    """The keyword arguments of ``cls`` from a JSON object: every key known, every required one present, each
    value of its field's type."""
    if not isinstance(record, dict):
        raise ExportError(where, f"{key or 'the rule description'}: must be a JSON object, got {_type_name(record)}")
    prefix = f"{key}." if key else ""
    fields = {FILE_KEYS.get(f.name, f.name): f for f in dataclasses.fields(cls)}
    unknown = sorted(set(record) - set(fields))
    if unknown:
        raise ExportError(where, f"{prefix}{unknown[0]}: unknown key (known: {', '.join(fields)})")
    missing = [k for k, f in fields.items() if k not in record
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ExportError(where, f"{prefix}{missing[0]}: missing")
    hints = typing.get_type_hints(cls)
    return {f.name: _value(hints[f.name], record[k], where, f"{prefix}{k}") for k, f in fields.items() if k in record}


def _plain(value):
    """A record as JSON-ready data (tuples as lists, file keys for field names), in field order."""
    if dataclasses.is_dataclass(value):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


class _Record:
    """``to_dict`` / ``from_dict`` of a record (a frozen, keyword-only dataclass)."""

    def to_dict(self) -> dict:
        return {FILE_KEYS.get(f.name, f.name): _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, record: dict, *, where: str = RULE_FILE, key: str = ""):
        return cls(**_read(cls, record, where, key))


# --- the records ----------------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Trace(_Record):
    """The presynaptic trace of a plastic connection: ``trace_i^t = decay·trace_i^{t-1} + impulse·pre_i^t``."""

    decay: float  # α of the learning network's neurons
    impulse: float  # s, their input scale


@dataclass(frozen=True, kw_only=True)
class PlasticConnection(_Record):
    """One plastic weight group, its presynaptic signal and its eligibility trace."""

    weights: str  # w_in | w_rec
    pre: str  # the presynaptic signal: input | learner_spikes
    pre_index: str  # that signal's step relative to the step t of ψ_j^t: t (x^t) | t-1 (z^{t-1})
    trace: Trace
    diagonal_plastic: bool  # false for w_rec: self-connections are never learned


@dataclass(frozen=True, kw_only=True)
class LearnerRecord(_Record):
    """The learning network: its neurons, its input width and its readout."""

    neurons: dict  # NeuronSpec.to_dict() (eprop_l2l.cells.spec)
    n_in: int
    readout: dict  # ReadoutSpec.to_dict()


@dataclass(frozen=True, kw_only=True)
class PostFactor(_Record):
    """The post-synaptic factor ψ_j^t of the learning network's neurons."""

    name: str  # psi
    surrogate: str  # the pseudo-derivative's shape (eprop_l2l.cells.spike.SURROGATES)
    gamma_pd: float
    v_th: float
    zero_while_refractory: bool
    definition: str


@dataclass(frozen=True, kw_only=True)
class LearningSignal(_Record):
    """The learning signal L_j^t and its source, the learned error module (exported with its weights)."""

    source: str  # error_module
    neurons: dict  # the module's NeuronSpec.to_dict()
    inputs: tuple[tuple[str, int], ...]  # (input, width) in the module's concatenation order
    learner_spikes_index: str  # t: the module sees the learner's spikes of the same step
    filter_decay: float  # of the module's spikes, ζ̄^t = filter_decay·ζ̄^{t-1} + ζ^t
    filter_tau_ms: float
    projection: str  # the weights that map ζ̄ to L: em_proj
    definition: str


@dataclass(frozen=True, kw_only=True)
class Accumulation(_Record):
    """How the update is accumulated (every step, into a tag) and applied (once, after the demonstration)."""

    every_step: str = "tag_ji += psi_j^t * L_j^t * trace_i^t"
    apply: str = "after the last step of each demonstration: W -= eta * tag; tag = 0"


@dataclass(frozen=True, kw_only=True)
class NumberFormat(_Record):
    """The arithmetic of the rule: ``float32``, or ``fixed`` with the learning engine's format
    (``FixedFormat.to_dict()`` of :mod:`eprop_l2l.inner_loop.fixed_point`), its calibrated exponents and the
    engine's constants (:func:`eprop_l2l.hardware.export.engine_format`), held in ``engine`` and written beside
    ``kind`` in the file."""

    kind: str = "float32"
    engine: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"kind": self.kind, **self.engine}

    @classmethod
    def from_dict(cls, record: dict, *, where: str = RULE_FILE, key: str = "number_format") -> NumberFormat:
        if not isinstance(record, dict):
            raise ExportError(where, f"{key}: must be a JSON object, got {_type_name(record)}")
        kind = record.get("kind")
        if kind not in NUMBER_KINDS:
            raise ExportError(where, f"{key}.kind: {kind!r} (choose from {', '.join(NUMBER_KINDS)})")
        engine = {k: v for k, v in record.items() if k != "kind"}
        if kind == "float32" and engine:
            raise ExportError(where, f"{key}.{sorted(engine)[0]}: unknown key (a float32 format has only 'kind')")
        return cls(kind=kind, engine=engine)

    @property
    def is_fixed(self) -> bool:
        return self.kind == "fixed"


@dataclass(frozen=True, kw_only=True)
class RuleDescription(_Record):
    """The inner-loop rule of a trained model as data (``rule.json``); see :mod:`.rule`."""

    learner: LearnerRecord
    plastic: tuple[PlasticConnection, ...]
    post_factor: PostFactor
    learning_signal: LearningSignal
    inner_lr: float  # the (meta-learned) inner learning rate η: W ← W − η·tag (file key "eta")
    kappa: float = 0.0  # readout filter of the trace; 0 in e-prop 2
    n_updates: int = 1  # demonstrations, each followed by one application of its tag
    accumulation: Accumulation = field(default_factory=Accumulation)
    number_format: NumberFormat = field(default_factory=NumberFormat)
    format_version: int = FORMAT_VERSION

    @property
    def plastic_names(self) -> tuple[str, ...]:
        return tuple(c.weights for c in self.plastic)

    def connection(self, name: str) -> PlasticConnection:
        """The plastic connection of the weight group ``name``."""
        for conn in self.plastic:
            if conn.weights == name:
                return conn
        raise ExportError(RULE_FILE, f"plastic: no connection {name!r}")

    @classmethod
    def from_dict(cls, record: dict, *, where: str = RULE_FILE, key: str = "") -> RuleDescription:
        """The description in a ``rule.json`` record; a version this reader does not know, or a malformed record,
        is one :class:`ExportError` line naming ``where`` (the file)."""
        if not isinstance(record, dict):
            raise ExportError(where, "not a rule description (expected a JSON object)")
        version = record.get("format_version")
        if version != FORMAT_VERSION:
            raise ExportError(where, f"format version {version!r}; this eprop-l2l reads version {FORMAT_VERSION} "
                              "(export the model again with this version)")
        return cls(**_read(cls, record, where, key))
