"""The records of the rule description (``rule.json``): typed, frozen, keyword-only, each with ``to_dict`` /
``from_dict``.

This module uses the standard library only (no torch, no numpy; Python 3.10), so that both readers share the one
schema: the torch side (:mod:`.rule`: :func:`~.rule.describe`, the files, the rebuilt model) and the Lava program
(:mod:`.lava.artefacts`, CPython 3.10 without torch). The neuron and readout constants stay the records of
:mod:`eprop_l2l.cells.spec` (``NeuronSpec.to_dict()``, ``ReadoutSpec.to_dict()``), held here as those dicts:
``cells`` imports torch when it is imported, and :func:`.rule.learner_neurons` turns them back into specs.

``from_dict`` refuses a missing, unknown or mistyped key with one :class:`ExportError` line naming the file and
the key's path (``rule.json: plastic[1].trace.decay: must be a number, got 'x'``), and what is physically
impossible (:func:`check_physical`: a non-finite number, a decay outside (0, 1), η ≤ 0, ...) the same way; the
neuron and readout records inside are held to their specs' keys (:data:`NEURON_KEYS`, :data:`READOUT_KEYS`).
The files around it are read by :mod:`.reader`. ``docs/export.md`` explains every field.

One name per quantity: the inner learning rate is :attr:`RuleDescription.inner_lr` (config ``inner.lr``), as in
the rest of the package. Its key in the file is ``eta`` (η of the update ``W ← W − η·tag``), as it has been since
format version 1, so every export stays readable without a conversion; :data:`FILE_KEYS` is the one place that
maps field names to file keys.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from dataclasses import dataclass, field

from ..errors import ConfigError

# 2: the learning signal may be e-prop 1's output error through a feedback matrix (FeedbackSignal); version 1
# (a learned error module's signal only) is still read, and re-written as it was
# 3: an ALIF learner's adaptation eligibility (AdaptationEligibility, key "adaptation", written only for ALIF
# learners, so that a version 1 or 2 file is re-written byte for byte)
FORMAT_VERSION = 3
READ_VERSIONS = (1, 2, 3)
RULE_FILE = "rule.json"
# the weights beside the description (weights.npz): the learning network's, then the error module's
WEIGHTS_FILE = "weights.npz"
LEARNER_WEIGHTS = ("w_in", "w_rec", "w_out")
MODULE_WEIGHTS = ("em_w_in", "em_w_rec", "em_proj")
FEEDBACK_MATRIX = "b_fb"  # e-prop 1's own feedback matrix B [n, n_out] (random or meta-learned)
NUMBER_KINDS = ("float32", "fixed")
# a record's field → its key in rule.json, where the two differ
FILE_KEYS = {"inner_lr": "eta"}
# the keys of NeuronSpec.to_dict() and ReadoutSpec.to_dict() (eprop_l2l.cells.spec; ``cells`` imports torch),
# the derived decays last: tests/test_artefact_reader.py pins them to the specs' fields
NEURON_KEYS = ("model", "n", "dt_ms", "tau_m_ms", "v_th", "n_ref", "input_scale", "surrogate", "gamma_pd",
               "tau_a_ms", "beta", "n_adaptive", "reset", "refractory", "alpha", "rho")
NEURON_REQUIRED = NEURON_KEYS[:9]
READOUT_KEYS = ("n_in", "n_out", "dt_ms", "tau_out_ms", "input_scale", "bias", "kappa")
READOUT_REQUIRED = READOUT_KEYS[:6]


class ExportError(ConfigError):
    """A model or artefact the export cannot handle; ``str(err)`` is one line naming the construct."""


# --- reading one record ---------------------------------------------------------------------------------------
def _type_name(value) -> str:
    return type(value).__name__


def _value(hint, value, where: str, key: str):
    """``value`` read as the field type ``hint`` (a record, a tuple, or a JSON scalar or object)."""
    if dataclasses.is_dataclass(hint):
        return hint.from_dict(value, where=where, key=key)
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # records told apart by their "source"
        options = tuple(a for a in typing.get_args(hint) if a is not type(None))
        if len(options) == 1:  # an optional record: absent is None
            return None if value is None else _value(options[0], value, where, key)
        sources = {a.SOURCE: a for a in typing.get_args(hint)}
        source = value.get("source") if isinstance(value, dict) else None
        if source not in sources:
            raise ExportError(where, f"{key}.source: {source!r} (choose from {', '.join(sources)})")
        return sources[source].from_dict(value, where=where, key=key)
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

    SOURCE: typing.ClassVar[str] = "error_module"
    source: str  # error_module
    neurons: dict  # the module's NeuronSpec.to_dict()
    inputs: tuple[tuple[str, int], ...]  # (input, width) in the module's concatenation order
    learner_spikes_index: str  # t: the module sees the learner's spikes of the same step
    filter_decay: float  # of the module's spikes, ζ̄^t = filter_decay·ζ̄^{t-1} + ζ^t
    filter_tau_ms: float
    projection: str  # the weights that map ζ̄ to L: em_proj
    definition: str


@dataclass(frozen=True, kw_only=True)
class FeedbackSignal(_Record):
    """e-prop 1's learning signal (format version 2): the learner's own output error broadcast through a feedback
    matrix, ``L^t = B·err^t`` with ``err^t = mask^t·(y^t − y*^t)``, y^t the learner's leaky readout
    (``learner.readout``) of the spikes z^t of the same step and y* the target, an input of ``target_width``
    numbers per step (the motor targets). B is ``scale·projection`` (``b_fb`` [n, n_out]: random or meta-learned
    B), or ``scale·projectionᵀ`` with ``transposed`` (the symmetric B = s·(W^out)ᵀ)."""

    SOURCE: typing.ClassVar[str] = "output_error"
    source: str  # output_error
    feedback: str  # the feedback kind (error_modules.feedback.KINDS): symmetric | random
    error: str  # what the error compares: motor (y − y*, the target outputs)
    target_width: int  # y* per step: the readout's n_out
    projection: str  # the weights B is made of: b_fb | w_out
    transposed: bool  # B = scale·projectionᵀ (w_out) rather than scale·projection (b_fb)
    scale: float  # the readout's input scale s for symmetric B, 1 otherwise
    definition: str



@dataclass(frozen=True, kw_only=True)
class AdaptationEligibility(_Record):
    """An ALIF learner's eligibility (format version 3): beside the presynaptic trace, each synapse holds
    ``eps_a`` (ε_a of ``cells/alif.py``), and the tag accumulates ψL times the trace minus β_j·ε_a. ρ and β_j
    (β for the last ``n_adaptive`` neurons, 0 for the others) are the learner's neuron record's."""

    definition: str = ("eps_a_ji^{t+1} = psi_j^t * trace_i^t + (rho - beta_j * psi_j^t) * eps_a_ji^t, eps_a^0 = 0; "
                       "tag_ji += psi_j^t * L_j^t * (trace_i^t - beta_j * eps_a_ji^t)")


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
    learning_signal: LearningSignal | FeedbackSignal
    inner_lr: float  # the (meta-learned) inner learning rate η: W ← W − η·tag (file key "eta")
    kappa: float = 0.0  # readout filter of the trace; 0 in e-prop 2
    n_updates: int = 1  # demonstrations, each followed by one application of its tag
    accumulation: Accumulation = field(default_factory=Accumulation)
    number_format: NumberFormat = field(default_factory=NumberFormat)
    adaptation: AdaptationEligibility | None = None  # ALIF learners (version 3); None: ψL times the trace
    format_version: int = FORMAT_VERSION

    def to_dict(self) -> dict:
        record = super().to_dict()
        if self.adaptation is None:  # a LIF learner's record keeps the keys of versions 1 and 2
            del record["adaptation"]
        return record

    @property
    def is_feedback(self) -> bool:
        """Whether the learning signal is e-prop 1's output error through a feedback matrix."""
        return isinstance(self.learning_signal, FeedbackSignal)

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
        fields, version = _read_versioned(cls, record, "a rule description", where, key)
        rule = cls(**fields)
        if rule.is_feedback and version < 2:
            raise ExportError(where, f"learning_signal.source: {FeedbackSignal.SOURCE!r} needs format version 2, "
                              f"the file says {version}")
        if rule.adaptation is not None and version < 3:
            raise ExportError(where, f"adaptation: needs format version 3, the file says {version}")
        check_physical(rule, where)
        return rule


def _read_versioned(cls, record, what: str, where: str, key: str, unversioned: int | None = None) -> tuple[dict, int]:
    """The fields of a top-level record of this format and its version: a JSON object of a version this reader
    reads (``unversioned``: the version assumed where the record names none), finite, every field known; else one
    line naming ``where``."""
    if not isinstance(record, dict):
        raise ExportError(where, f"not {what} (expected a JSON object)")
    version = record.get("format_version", unversioned)
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ExportError(where, f"format version {version!r}; this eprop-l2l reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))} (export the model again with this version)")
    _require_finite(record, where, key)
    return _read(cls, record, where, key), version


# --- the physical ranges --------------------------------------------------------------------------------------
# a range's test and how a message states it
UNIT = (lambda v: 0 < v < 1, "in (0, 1)")
POSITIVE = (lambda v: v > 0, "> 0")
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
BELOW_ONE = (lambda v: 0 <= v < 1, "in [0, 1)")
UP_TO_ONE = (lambda v: 0 < v <= 1, "in (0, 1]")
# the ranges of a neuron and a readout record's numbers (integers: a count at least the bound)
NEURON_RANGES = {"n": 1, "n_ref": 0, "n_adaptive": 0, "dt_ms": POSITIVE, "tau_m_ms": POSITIVE, "v_th": POSITIVE,
                 "input_scale": POSITIVE, "gamma_pd": POSITIVE, "tau_a_ms": POSITIVE, "beta": NON_NEGATIVE,
                 "alpha": UNIT, "rho": UP_TO_ONE}
READOUT_RANGES = {"n_in": 1, "n_out": 1, "dt_ms": POSITIVE, "tau_out_ms": POSITIVE, "input_scale": POSITIVE,
                  "kappa": UNIT}


def _require_finite(value, where: str, key: str) -> None:
    """Every number of a JSON record finite (Python's json reads ``NaN``, ``Infinity`` and ``1e400``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _require_finite(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _require_finite(v, where, f"{key}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ExportError(where, f"{key}: must be finite, got {value!r}")


def _in_range(value, bound, where: str, key: str) -> None:
    """``value`` within ``bound``: a (test, text) range, or the least value of an integer count."""
    if isinstance(bound, int):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ExportError(where, f"{key}: must be an integer, got {value!r}")
        if value < bound:
            raise ExportError(where, f"{key}: must be >= {bound}, got {value!r}")
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ExportError(where, f"{key}: must be a number, got {value!r}")
    test, text = bound
    if not test(value):
        raise ExportError(where, f"{key}: must be {text}, got {value:g}")


def _check_spec(record: dict, keys: tuple, required: tuple, ranges: dict, where: str, key: str) -> None:
    """A neuron or readout record: every key known, the required ones present, each number in its range."""
    unknown = sorted(set(record) - set(keys))
    if unknown:
        raise ExportError(where, f"{key}.{unknown[0]}: unknown key (known: {', '.join(keys)})")
    missing = [k for k in required if k not in record]
    if missing:
        raise ExportError(where, f"{key}.{missing[0]}: missing")
    for name, bound in ranges.items():
        if name in record and record[name] is not None:  # tau_a_ms is null without adaptation
            _in_range(record[name], bound, where, f"{key}.{name}")


def check_physical(rule: RuleDescription, where: str = RULE_FILE) -> None:
    """What a rule description states is physically possible: decays in (0, 1), η > 0, thresholds, time
    constants and sizes positive; one :class:`ExportError` line naming the file and the key otherwise."""
    _check_spec(rule.learner.neurons, NEURON_KEYS, NEURON_REQUIRED, NEURON_RANGES, where, "learner.neurons")
    _check_spec(rule.learner.readout, READOUT_KEYS, READOUT_REQUIRED, READOUT_RANGES, where, "learner.readout")
    checks = [("learner.n_in", rule.learner.n_in, 1), ("eta", rule.inner_lr, POSITIVE),
              ("kappa", rule.kappa, BELOW_ONE), ("n_updates", rule.n_updates, 1),
              ("post_factor.gamma_pd", rule.post_factor.gamma_pd, POSITIVE),
              ("post_factor.v_th", rule.post_factor.v_th, POSITIVE)]
    signal = rule.learning_signal
    if rule.is_feedback:
        _check_feedback(signal, rule.learner.readout, where)
        checks.append(("learning_signal.scale", signal.scale, POSITIVE))
    else:
        _check_spec(signal.neurons, NEURON_KEYS, NEURON_REQUIRED, NEURON_RANGES, where, "learning_signal.neurons")
        checks += [("learning_signal.filter_decay", signal.filter_decay, UNIT),
                   ("learning_signal.filter_tau_ms", signal.filter_tau_ms, POSITIVE)]
        checks += [(f"learning_signal.inputs[{i}][1]", width, 1) for i, (_, width) in enumerate(signal.inputs)]
    adaptive = rule.learner.neurons.get("model") == "alif" and rule.learner.neurons.get("n_adaptive", 0) > 0
    if adaptive != (rule.adaptation is not None):
        raise ExportError(where, "adaptation: " + ("missing: the learner's neurons adapt (model alif, n_adaptive > 0), "
                                                   "so their eligibility holds eps_a" if adaptive else
                                                   "present, but the learner's neurons do not adapt"))
    for i, conn in enumerate(rule.plastic):
        checks += [(f"plastic[{i}].trace.decay", conn.trace.decay, UNIT),
                   (f"plastic[{i}].trace.impulse", conn.trace.impulse, POSITIVE)]
    for key, value, bound in checks:
        _in_range(value, bound, where, key)


# --- the plant that scores the demonstrations (plant.json) ----------------------------------------------------
PLANT_FILE = "plant.json"
# each plant the export scores on, with its geometry's keys (metres); the torch side's kinematics and the
# numpy copies (hardware/lava/plants.py) are pinned to each other by tests/test_lava_mirrors.py
PLANT_GEOMETRY = {"two_joint_arm": ("l1", "l2"), "scorbot": ("d1", "a1", "a2", "a3", "a4", "d_offset")}
# the geometry entries that are lengths (> 0); the others are offsets of any sign
PLANT_LENGTHS = {"two_joint_arm": ("l1", "l2"), "scorbot": ("a2", "a3", "a4")}
# a family's primary metric (MetaObjective.primary_metric) and how a table names it
PLANT_METRICS = {"mse_cart": "MSE_cart", "deviation_cm": "deviation (cm)"}


@dataclass(frozen=True, kw_only=True)
class Plant(_Record):
    """What the learner's output drives and how a movement is scored (``plant.json``), so that a reader needs
    neither torch nor the task family: the output y^t are the moving joints' velocities (rad/s), their angles
    φ^t = start + step_s·Σ_{t'≤t} y^{t'}, the end effector the plant's forward kinematics of φ^t with
    ``geometry``, and ``metric`` the family's primary metric of that path against the demonstrations' target
    path (``hand_target``). ``docs/export.md`` defines each kind."""

    kind: str  # two_joint_arm (e-prop 2's planar arm) | scorbot (natural e-prop's ED-Scorbot)
    step_s: float  # the joints' time per network step (s)
    start: tuple[float, ...]  # the moving joints' start posture (rad), one per readout output
    geometry: dict  # the plant's lengths and offsets (m): the keys of PLANT_GEOMETRY[kind]
    metric: str  # mse_cart (m², mean over steps and coordinates) | deviation_cm (100·√mean_t ‖p − p*‖²)
    format_version: int = FORMAT_VERSION

    @classmethod
    def from_dict(cls, record: dict, *, where: str = PLANT_FILE, key: str = "") -> Plant:
        """The plant in a ``plant.json`` record; a malformed or impossible one is one :class:`ExportError` line
        naming ``where`` and the key."""
        # a plant record without a version is read as the current one (the file is newer than the format)
        plant = cls(**_read_versioned(cls, record, "a plant record", where, key, FORMAT_VERSION)[0])
        check_plant(plant, where)
        return plant

    @property
    def dims(self) -> int:
        """Coordinates of the end effector: (x, y) of the planar arm, (x, y, z) of the Scorbot."""
        return 2 if self.kind == "two_joint_arm" else 3


def check_plant(plant: Plant, where: str = PLANT_FILE) -> None:
    """A plant this reader knows, with its geometry's keys, positive lengths and step, one start angle per joint."""
    if plant.kind not in PLANT_GEOMETRY:
        raise ExportError(where, f"kind: {plant.kind!r} (choose from {', '.join(PLANT_GEOMETRY)})")
    if plant.metric not in PLANT_METRICS:
        raise ExportError(where, f"metric: {plant.metric!r} (choose from {', '.join(PLANT_METRICS)})")
    keys = PLANT_GEOMETRY[plant.kind]
    unknown = sorted(set(plant.geometry) - set(keys))
    if unknown:
        raise ExportError(where, f"geometry.{unknown[0]}: unknown key (a {plant.kind} has {', '.join(keys)})")
    missing = [k for k in keys if k not in plant.geometry]
    if missing:
        raise ExportError(where, f"geometry.{missing[0]}: missing")
    for name in keys:
        bound = POSITIVE if name in PLANT_LENGTHS[plant.kind] else (lambda v: True, "a number")
        _in_range(plant.geometry[name], bound, where, f"geometry.{name}")
    _in_range(plant.step_s, POSITIVE, where, "step_s")
    if len(plant.start) != 2:  # both plants move two joints (the readout's two outputs)
        raise ExportError(where, f"start: must have 2 entries (one per moving joint), got {len(plant.start)}")


# what a feedback signal may name: its kinds (error_modules.feedback.KINDS that meta-training runs), errors and
# the projection each kind is made of (tests/test_lava_mirrors.py pins the kinds to the torch side's)
FEEDBACK_PROJECTIONS = {"symmetric": ("w_out", True), "random": (FEEDBACK_MATRIX, False)}
FEEDBACK_ERRORS = ("motor",)


def _check_feedback(signal: FeedbackSignal, readout: dict, where: str) -> None:
    if signal.feedback not in FEEDBACK_PROJECTIONS:
        raise ExportError(where, f"learning_signal.feedback: {signal.feedback!r} (choose from "
                          f"{', '.join(FEEDBACK_PROJECTIONS)})")
    if signal.error not in FEEDBACK_ERRORS:
        raise ExportError(where, f"learning_signal.error: {signal.error!r} (choose from {', '.join(FEEDBACK_ERRORS)})")
    projection = FEEDBACK_PROJECTIONS[signal.feedback]
    if (signal.projection, signal.transposed) != projection:
        raise ExportError(where, f"learning_signal.projection: {signal.projection!r} (transposed "
                          f"{str(signal.transposed).lower()}); {signal.feedback} feedback is {projection[0]!r} "
                          f"(transposed {str(projection[1]).lower()})")
    if signal.feedback == "random" and signal.scale != 1:  # Feedback: only symmetric B carries the readout's s
        raise ExportError(where, f"learning_signal.scale: {signal.scale!r}; random feedback B is b_fb itself (1)")
    if signal.target_width != readout.get("n_out"):
        raise ExportError(where, f"learning_signal.target_width: {signal.target_width!r}, the readout has n_out "
                          f"{readout.get('n_out')!r}")
