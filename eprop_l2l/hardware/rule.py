"""The inner-loop rule of a trained model as data: a versioned, JSON-serialisable description plus the weights
as ``.npz`` arrays (never pickles).

What the description states (its typed records are in :mod:`.description`; ``docs/export.md`` explains every
field):

* the learning network: its neuron constants (:class:`~eprop_l2l.cells.spec.NeuronSpec`), input width, readout;
* the plastic connections, each with its presynaptic signal, the index of that signal paired with step t
  (``x^t`` for ``w_in``, ``z^{t-1}`` for ``w_rec``) and its eligibility trace (decay α, impulse s);
* the post-synaptic factor ψ (surrogate shape and constants) and the learning signal L with its source, the
  learned error module (its neurons, which inputs it sees in which order and at which step, the filter of its
  spikes and the projection), itself exported with its weights;
* κ (0: L multiplies the unfiltered trace), the meta-learned inner learning rate η (``inner_lr``), the number
  of demonstrations, and how the update is accumulated (every step, into a tag) and applied (once, after the
  demonstration);
* the number format (float32, or the fixed-point formats and scales of :mod:`eprop_l2l.inner_loop.fixed_point`).

:func:`describe` builds it from a :class:`~eprop_l2l.meta.learner.MetaLearner` and its meta-parameters;
:func:`save_rule` / :func:`load_rule` write and read ``rule.json`` + ``weights.npz``; :func:`build_model`
turns a loaded description back into the library objects that run it (:mod:`.engine`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..cells.from_spec import cell_from_spec, readout_from_spec
from ..cells.spec import NeuronSpec, ReadoutSpec
from .description import (
    FEEDBACK_PROJECTIONS,
    RULE_FILE,
    WEIGHTS_FILE,
    AdaptationEligibility,
    ExportError,
    FeedbackSignal,
    LearnerRecord,
    LearningSignal,
    NumberFormat,
    PlasticConnection,
    PostFactor,
    RuleDescription,
    Trace,
)
from .reader import read_rule_files, weight_shapes

# which presynaptic signal each plastic weight group multiplies, and its index relative to the step t of ψ_j^t
PRESYNAPTIC = {"w_in": ("input", "t"), "w_rec": ("learner_spikes", "t-1")}


def learner_neurons(rule: RuleDescription) -> NeuronSpec:
    """The learning network's neuron constants."""
    return NeuronSpec.from_dict(rule.learner.neurons)


def module_neurons(rule: RuleDescription) -> NeuronSpec:
    """The error module's neuron constants."""
    return NeuronSpec.from_dict(rule.learning_signal.neurons)


def _require_exportable(learner) -> None:
    """Refuse what the rule description cannot express, naming the construct."""
    from ..cells.alif import ALIF
    from ..cells.lif import LIF
    from ..error_modules.feedback import Feedback
    from ..error_modules.learned import LearnedErrorModule

    cell = learner.network.cell
    if not learner.rule.local:
        raise ExportError("inner.rule", f"{learner.inner_rule!r}: only a local inner rule (e-prop) is exported")
    if not isinstance(cell, LIF | ALIF):
        raise ExportError("model.cell", f"{type(cell).__name__} learning network: the exported rule supports LIF "
                          "and ALIF learning networks")
    module = learner.error_module
    if isinstance(module, Feedback):
        _require_exportable_feedback(learner, module)
    elif not isinstance(module, LearnedErrorModule):
        raise ExportError("error_module.kind", f"{type(module).__name__}: the export supports learned error modules "
                          "and feedback matrices (e-prop 1)")
    elif module.use_produced_path:
        raise ExportError("error_module.use_produced_path", "the produced hand path is computed through the plant "
                          "(the arm), which the exported rule does not hold")
    elif not isinstance(module.cell, LIF | ALIF):
        raise ExportError("error_module.cell", f"{type(module.cell).__name__} error module: the export supports "
                          "LIF and ALIF error modules (spiking populations a chip can run)")
    bad = [n for n in learner.plastic if n not in PRESYNAPTIC]
    if bad:
        raise ExportError("inner.plastic", f"{bad}: only w_in and w_rec are plastic on the learning engine")
    if learner.kappa != 0.0:
        raise ExportError("inner.kappa", f"{learner.kappa}: a κ-filtered trace needs a per-synapse trace; export "
                          "supports κ = 0 (e-prop 2)")


def _require_exportable_feedback(learner, module) -> None:
    """e-prop 1: a feedback kind a chip holds as one fixed projection, and an error the learning engine's
    populations compute (the learner's own readout against an input target)."""
    if module.kind not in FEEDBACK_PROJECTIONS:
        raise ExportError("error_module.feedback", f"{module.kind!r}: B learned between trials has no artefact; the "
                          f"export supports {', '.join(FEEDBACK_PROJECTIONS)} feedback")
    objective = learner.objective.kind
    if objective != "motor":
        raise ExportError("inner.objective", f"{objective!r}: the Cartesian error p − p* needs the arm's hand path, "
                          "the forward kinematics (cos, sin) of the integrated joint angles of the readout, which no "
                          "neuron, synapse or learning-engine trace computes; the export supports "
                          "inner.objective=motor (the error y − y* of the readout)")


def _feedback_signal(learner) -> FeedbackSignal:
    readout, module = learner.network.readout, learner.error_module
    projection, transposed = FEEDBACK_PROJECTIONS[module.kind]
    scale = readout.input_scale if module.properties.scaled_by_readout else 1.0
    return FeedbackSignal(
        source=FeedbackSignal.SOURCE, feedback=module.kind, error=learner.objective.kind,
        target_width=readout.n_out, projection=projection, transposed=transposed, scale=float(scale),
        definition="L^t = B @ err^t, err^t = mask^t * (y^t - y_target^t), y^t = kappa * y^{t-1} + s * w_out @ z^t "
                   "+ b_out; B = scale * (w_out^T if transposed else b_fb)")


def _module_signal(module) -> LearningSignal:
    inputs = tuple((name, n) for name, n, used in (("context", module.n_context, module.use_context),
                                                   ("learner_spikes", module.n_learner, module.use_spikes),
                                                   ("input", module.n_inputs, module.use_inputs)) if used)
    return LearningSignal(
        source="error_module", neurons=module.cell.spec.to_dict(), inputs=inputs, learner_spikes_index="t",
        filter_decay=module.decay, filter_tau_ms=module.signal_tau, projection="em_proj",
        definition="L^t = em_proj @ zeta_bar^t, zeta_bar^t = filter_decay * zeta_bar^{t-1} + zeta^t")


def describe(learner, meta: dict, number_format: NumberFormat | None = None) -> tuple[RuleDescription, dict]:
    """The rule description and the weights (numpy, float32) of a trained e-prop 2 or e-prop 1 model."""
    from ..error_modules.feedback import Feedback

    _require_exportable(learner)
    cell, readout, module = learner.network.cell, learner.network.readout, learner.error_module
    spec = cell.spec
    plastic = tuple(PlasticConnection(weights=name, pre=PRESYNAPTIC[name][0], pre_index=PRESYNAPTIC[name][1],
                                      trace=Trace(decay=spec.alpha, impulse=spec.input_scale),
                                      diagonal_plastic=name != "w_rec")
                    for name in learner.plastic)
    signal = _feedback_signal(learner) if isinstance(module, Feedback) else _module_signal(module)
    post = PostFactor(name="psi", surrogate=spec.surrogate, gamma_pd=spec.gamma_pd, v_th=spec.v_th,
                      zero_while_refractory=spec.n_ref > 0,
                      definition="psi^t = (gamma_pd/v_th) * pd((v^t - v_th)/v_th), 0 while refractory")
    adaptive = spec.model == "alif" and spec.n_adaptive > 0  # ε_a per synapse (cells/alif.py)
    rule = RuleDescription(
        learner=LearnerRecord(neurons=spec.to_dict(), n_in=cell.n_in, readout=readout.spec.to_dict()),
        plastic=plastic, post_factor=post, learning_signal=signal, inner_lr=float(learner.inner_lr_value(meta)),
        kappa=0.0, n_updates=learner.n_inner_updates, number_format=number_format or NumberFormat(),
        adaptation=AdaptationEligibility() if adaptive else None)
    names = tuple(weight_shapes(rule))  # the arrays the reader expects of this description
    weights = {k: meta[k].detach().cpu().to(torch.float32).numpy() for k in names}
    return rule, weights


def save_rule(directory: Path, rule: RuleDescription, weights: dict) -> list[Path]:
    directory = Path(directory)
    (directory / RULE_FILE).write_text(json.dumps(rule.to_dict(), indent=2, allow_nan=False))
    np.savez(directory / WEIGHTS_FILE, **weights)
    return [directory / RULE_FILE, directory / WEIGHTS_FILE]


def load_rule(directory: Path) -> tuple[RuleDescription, dict]:
    """``(rule, weights)`` from an export directory, read by the one artefact reader (:mod:`.reader`: the
    schema, the physical ranges, bounded arrays of the shapes the description implies); a missing, malformed or
    foreign file → :class:`ExportError`. The manifest is :func:`~.export.verify`'s (the export reads its own
    files with this before it writes one)."""
    return read_rule_files(directory)


@dataclass(frozen=True)
class RuleModel:
    """The library objects a loaded description stands for (rebuilt from the specs, not re-implemented)."""

    cell: object
    readout: object
    module: object


def build_model(rule: RuleDescription) -> RuleModel:
    from ..error_modules.feedback import KINDS, Feedback
    from ..error_modules.learned import LearnedErrorModule

    neurons = learner_neurons(rule)
    cell = cell_from_spec(neurons, rule.learner.n_in)
    readout = readout_from_spec(ReadoutSpec.from_dict(rule.learner.readout))
    signal = rule.learning_signal
    if rule.is_feedback:  # B's scale is the description's (Feedback's readout_scale: symmetric carries s)
        scale = {"readout_scale": signal.scale} if KINDS[signal.feedback].scaled_by_readout else {}
        return RuleModel(cell, readout, Feedback(signal.feedback, cell.n_rec, signal.target_width, **scale))
    widths = dict(signal.inputs)
    module_in = sum(widths.values())
    module_cell = cell_from_spec(module_neurons(rule), module_in)
    module = LearnedErrorModule(module_cell, cell.n_rec, widths.get("context", 0), widths.get("input", 0),
                                "context" in widths, "learner_spikes" in widths, "input" in widths,
                                signal.filter_tau_ms,
                                dt_ms=neurons.dt_ms)
    return RuleModel(cell, readout, module)
