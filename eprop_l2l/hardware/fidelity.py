"""How faithfully an exported rule reproduces the trained model's one-shot update, measured on held-out tasks.

Three comparisons, each against the causal reference semantics (``eprop_online`` of the trained model):

1. the loaded description, run in float by :mod:`.engine` — must be equal (float precision);
2. the fixed-point emulation at a format wide enough to be exact — must be equal (rounding only);
3. the emulation at the learning engine's formats — the difference is what the hardware's precision costs:
   correlation of the quantised ΔW with the float ΔW, and the one-shot error after each update.

The one-shot error is the family's primary metric (``family.errors(y, batch)[family.primary_metric]``: MSE_cart
for the arm, the deviation in cm for the ED-Scorbot); its entries are named after it (``mse_cart_after``,
``deviation_cm_after``, ...).
"""

from __future__ import annotations

import torch

from ..inner_loop.eprop_online import eprop_online
from ..inner_loop.fixed_point import FixedFormat, Scales, calibrate_adaptation, calibrate_run, movement_generators
from ..inner_loop.losses import Loss
from ..meta.params import ERROR_MODULE, NETWORK
from ..numerics.filters import causal_filter
from .engine import FixedArithmetic, FloatArithmetic, adapted_trial, run_rule
from .fixed_module import ModuleFormat, attach_fixed_module
from .rule import RuleDescription, build_model, learner_neurons


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ over all entries."""
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def presynaptic_traces(rule: RuleDescription, x: torch.Tensor, spikes: torch.Tensor) -> dict:
    """F_α(pre) of every plastic connection over a recorded demonstration (without the impulse s)."""
    traces = {}
    for conn in rule.plastic:
        if conn.pre == "input":
            pre = x
        else:  # z^{t-1}: the recorded spikes shifted by one step
            pre = torch.cat([torch.zeros_like(spikes[:, :1]), spikes[:, :-1]], 1)
        traces[conn.weights] = causal_filter(pre, conn.trace.decay)
    return traces


def demonstrate(rule: RuleDescription, weights: dict, batch, arithmetic, model=None):
    """:func:`~.engine.run_rule` on the demonstrations of a task batch (inputs, context, and the motor targets and
    mask that an e-prop 1 rule's output error compares with)."""
    return run_rule(rule, weights, batch.inputs, batch.context, arithmetic, model, batch.targets, batch.mask)


def calibrate_rule(rule: RuleDescription, weights: dict, batch, fmt: FixedFormat, model=None) -> Scales:
    """Scales of ``fmt`` for this model from float demonstrations of a batch of calibration tasks (not the
    evaluated ones), with the format's calibration quantiles."""
    x = batch.inputs
    result = demonstrate(rule, weights, batch, FloatArithmetic(rule), model)
    traces = presynaptic_traces(rule, x, result.spikes)
    before = {n: weights[n] for n in rule.plastic_names}
    input_scale = learner_neurons(rule).input_scale
    scales = calibrate_run(fmt, rule.inner_lr, input_scale, before, result.weights, traces,
                           result.psi * result.signals, result.tags)
    if rule.adaptation is None:
        return scales
    return calibrate_adaptation(fmt, scales, input_scale, result.held_max)


def online_reference(learner, meta: dict, batch) -> dict:
    """``eprop_online``'s Σ_t ψ L x̄ of the trained model, per task."""
    b = batch.inputs.shape[0]
    fast = {k: (v.expand(b, *v.shape) if k in learner.plastic else v) for k, v in meta[NETWORK].items()}
    result = eprop_online(learner.network, fast, batch.inputs, batch.targets, batch.mask, Loss("mse"),
                          learner.error_module, source_params=meta[ERROR_MODULE], plastic=learner.plastic,
                          kappa=0.0, context=batch.context)
    return result.grads


def one_shot_errors(rule: RuleDescription, weights: dict, plastic: dict, batch, family, model=None) -> torch.Tensor:
    """The family's primary metric per task ``[B]`` of the test trial after the update to ``plastic``."""
    _, y = adapted_trial(rule, weights, plastic, batch.inputs, model)
    return family.errors(y, batch)[family.primary_metric]


def measure(rule: RuleDescription, weights: dict, batch, calibration_batch, formats: dict[str, FixedFormat],
            learner=None, meta: dict | None = None, seed: int = 0, *, family,
            module_formats: dict[str, tuple[ModuleFormat, FixedFormat | None]] | None = None,
            engine: str = "loihi") -> tuple[dict, dict]:
    """The fidelity report (JSON-ready) and the per-task arrays behind it.

    ``learner``/``meta`` (the trained model, if available) give the ``eprop_online`` reference; the loaded
    ``rule``/``weights`` are what the export wrote; ``family`` scores the test trials (its primary metric).
    ``module_formats``: entries with the error module at a chip's precision (:mod:`.fixed_module`), each with
    the rule in a fixed-point format or (None) in float. ``engine``: the entry of ``formats`` whose integers go
    into the arrays (``q_*``) for the Lava program's comparison. Stochastic rounding draws one stream per movement
    (:func:`~eprop_l2l.inner_loop.fixed_point.movement_generators`): the numbers do not depend on the batching.
    """
    metric = family.primary_metric
    model = build_model(rule)
    float_run = demonstrate(rule, weights, batch, FloatArithmetic(rule), model)
    report, arrays = {"n_tasks": int(batch.inputs.shape[0])}, {}
    if learner is not None:
        reference = online_reference(learner, meta, batch)
        report["loaded_rule_vs_eprop_online"] = {n: relative_error(float_run.tags[n], reference[n])
                                                 for n in rule.plastic_names}
    trajectory, y_test = adapted_trial(rule, weights, float_run.weights, batch.inputs, model)
    float_errors = family.errors(y_test, batch)[metric]
    before = one_shot_errors(rule, weights, float_run.initial, batch, family, model)
    report["float"] = {f"{metric}_before": float(before.mean()), f"{metric}_after": float(float_errors.mean())}
    arrays.update(z_demo=float_run.spikes, psi=float_run.psi, signals=float_run.signals, y_test=y_test,
                  z_test=trajectory.outputs, **{f"{metric}_after": float_errors})
    arrays.update({f"dw_{n[2:]}": float_run.tags[n] for n in rule.plastic_names})
    # −η·tag, not the difference of the float32 weights (which would cancel ΔW's digits away)
    float_dw = {n: -rule.inner_lr * float_run.tags[n].double() for n in rule.plastic_names}
    generators = movement_generators(seed, range(batch.inputs.shape[0]))
    runs = [(name, fmt, None) for name, fmt in formats.items()]
    runs += [(name, fmt, module_fmt) for name, (module_fmt, fmt) in (module_formats or {}).items()]
    for name, fmt, module_fmt in runs:
        if fmt is None:
            scales, arithmetic = None, FloatArithmetic(rule)
        else:
            scales = calibrate_rule(rule, weights, calibration_batch, fmt, model)
            arithmetic = FixedArithmetic(rule, fmt, scales, generators)
        if module_fmt is not None:
            attach_fixed_module(arithmetic, rule, weights, model=model, fmt=module_fmt)
        fixed_run = demonstrate(rule, weights, batch, arithmetic, model)
        if fmt is None:
            fixed_dw = {n: -rule.inner_lr * fixed_run.tags[n].double() for n in rule.plastic_names}
        else:
            fixed_dw = {n: fixed_run.weights[n] - fixed_run.initial[n] for n in rule.plastic_names}
        errors = one_shot_errors(rule, weights, fixed_run.weights, batch, family, model)
        entry = {"format": None if fmt is None else fmt.to_dict(),
                 "spike_agreement_demo": float((fixed_run.spikes == float_run.spikes).double().mean()),
                 f"{metric}_after": float(errors.mean()),
                 f"{metric}_ratio_to_float": float(errors.mean() / float_errors.mean())}
        if scales is not None:
            entry["scales"] = scales.to_dict()
        if module_fmt is not None:
            entry["error_module"] = arithmetic.module.record
            entry["signal_relative_error"] = relative_error(fixed_run.signals, float_run.signals)
            entry["signal_correlation"] = correlation(fixed_run.signals, float_run.signals)
        for n in rule.plastic_names:
            entry[n] = {"dw_correlation": correlation(fixed_dw[n], float_dw[n]),
                        "dw_relative_error": relative_error(fixed_dw[n], float_dw[n]),
                        "tag_correlation": correlation(fixed_run.tags[n], float_run.tags[n]),
                        "nonzero_updates_fraction": float((fixed_dw[n] != 0).double().mean())}
            if fmt is not None:
                sat = fixed_run.raw_tags[n].abs() >= fmt.tag_range[1]
                entry[n]["tag_saturated_fraction"] = float(sat.double().mean())
        report[name] = entry
        if name == engine:  # the learning engine's integers, for the Lava program's bit-level comparison
            arrays[f"q_{metric}_after"] = errors
            arrays.update(q_signals=fixed_run.signals, q_z_demo=fixed_run.spikes)
            for n in rule.plastic_names:
                arrays[f"q_tag_{n[2:]}"] = fixed_run.raw_tags[n]
                arrays[f"q_w_{n[2:]}"] = fixed_run.weights[n] * 2.0 ** (-scales.weight_exp[n])
    return report, arrays
