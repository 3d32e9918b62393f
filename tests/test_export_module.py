"""The error module at a chip's precision (hardware/fixed_module.py), ψL split over two y registers
(FixedFormat.y_split) and the per-movement rounding streams of the fixed-point emulation."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from eprop_l2l.errors import ConfigError
from eprop_l2l.hardware.engine import FixedArithmetic, FloatArithmetic, run_rule
from eprop_l2l.hardware.export import file_weights
from eprop_l2l.hardware.fidelity import calibrate_rule, relative_error
from eprop_l2l.hardware.fixed_module import LOIHI_MODULE, WIDE_MODULE, attach_fixed_module, module_record
from eprop_l2l.hardware.rule import ExportError, build_model, describe
from eprop_l2l.inner_loop.fixed_point import LOIHI, LOIHI_SPLIT, Scales, movement_generators
from eprop_l2l.meta.params import tree_map
from eprop_l2l.runs.evaluation import evaluation_setup

ROOT = Path(__file__).resolve().parent.parent
TRAINED = ROOT / "docs" / "results" / "arm_gpu"
EPROP1 = ROOT / "docs" / "results" / "ablation_eprop1_cpu_60min"


def _setup(run: Path):
    cfg, learner, family, meta, *_ = evaluation_setup(str(run))
    meta = tree_map(lambda v: v.detach().cpu(), meta)
    rule, weights = describe(learner, file_weights(meta))
    return cfg, family, rule, weights


@pytest.fixture(scope="module")
def trained():
    cfg, family, rule, weights = _setup(TRAINED)
    batch = family.sample(2, torch.Generator().manual_seed(cfg.eval.seed))
    return rule, weights, batch, build_model(rule)


def _run(rule, weights, batch, arithmetic, model, dtype=torch.float64):
    return run_rule(rule, weights, batch.inputs.to(dtype), batch.context.to(dtype), arithmetic, model)


def test_the_module_at_a_wide_format_equals_the_float_module(trained):
    rule, weights, batch, model = trained
    floating = _run(rule, weights, batch, FloatArithmetic(rule), model)
    wide = _run(rule, weights, batch, attach_fixed_module(FloatArithmetic(rule), rule, weights, model=model,
                                                            fmt=WIDE_MODULE), model)
    assert torch.equal(wide.spikes, floating.spikes)
    assert relative_error(wide.signals, floating.signals) <= 1e-6
    for name in rule.plastic_names:
        assert relative_error(wide.tags[name], floating.tags[name]) <= 1e-6, name


def test_the_module_at_loihi_precision_holds_8_bit_weights_and_integer_constants(trained):
    rule, weights, batch, model = trained
    record = module_record(rule, weights)
    assert set(record["weight_exp"]) == {"em_w_in", "em_w_rec", "em_proj"}
    assert record["v_exp"] == min(record["weight_exp"]["em_w_in"], record["weight_exp"]["em_w_rec"]) - 16
    assert record["alpha_mant"] == round(float(rule.learning_signal.neurons["alpha"]) * 2**24)
    arithmetic = attach_fixed_module(FloatArithmetic(rule), rule, weights, model=model, fmt="loihi")
    for name, w in arithmetic.module.weights_float.items():
        mantissa = w * 2.0 ** (-record["weight_exp"][name])
        assert torch.equal(mantissa, mantissa.round()) and mantissa.abs().max() <= 128, name
    floating = _run(rule, weights, batch, FloatArithmetic(rule), model)
    fixed = _run(rule, weights, batch, arithmetic, model)
    assert torch.equal(fixed.spikes, floating.spikes)  # the learner's demonstration does not depend on L
    error = relative_error(fixed.signals, floating.signals)
    assert 1e-4 < error < 0.2, error  # measured 0.049 on these 2 movements: the module's 8-bit weights


def test_unsupported_modules_and_formats_are_refused_in_one_line(trained):
    rule, weights, _, _ = trained
    with pytest.raises(ConfigError, match="number_format.error_module.*'huge'"):
        attach_fixed_module(FloatArithmetic(rule), rule, weights, fmt="huge")
    alif = dataclasses.replace(rule, learning_signal=dataclasses.replace(
        rule.learning_signal, neurons={**rule.learning_signal.neurons, "model": "alif"}))
    with pytest.raises(ExportError, match="learning_signal.neurons.model: 'alif'"):
        module_record(alif, weights)
    _, _, eprop1, eprop1_weights = _setup(EPROP1)
    with pytest.raises(ExportError, match="learning_signal.source"):
        module_record(eprop1, eprop1_weights)
    assert LOIHI_MODULE.to_dict() == {"weight_bits": 8, "v_frac_bits": 16, "decay_bits": 24}


def test_the_split_third_factor_holds_the_residual_in_y3():
    rule = _setup(TRAINED)[2]
    fmt = dataclasses.replace(LOIHI_SPLIT, rounding="nearest")
    unit_scales = Scales({"w_in": 0, "w_rec": 0}, {"w_in": 0, "w_rec": 0}, 0, {"w_in": 0, "w_rec": 0},
                         {"w_in": 0, "w_rec": 0})
    arithmetic = FixedArithmetic(rule, fmt, unit_scales, torch.Generator())
    value = torch.linspace(-200.0, 200.0, 4001, dtype=torch.float64) + 0.0137  # no residual of exactly ½
    psi_signal = -value / arithmetic.y_scale
    y = arithmetic.third_factor(psi_signal)
    inside = value.abs() <= 127
    error = (y[inside] - value[inside]).abs()
    assert error.max() <= 2.0**-9 + 1e-12  # y2 + 2^-8·y3, both rounded to nearest
    assert y.max() <= 127 + 127 / 256 and y.min() >= -128 - 128 / 256  # each register saturates
    assert (y[~inside].abs() >= 127).all()  # beyond the range: saturated
    single = FixedArithmetic(rule, dataclasses.replace(LOIHI, rounding="nearest"), unit_scales, torch.Generator())
    assert torch.equal(single.third_factor(psi_signal)[inside], value[inside].round())
    assert "y_split" not in LOIHI.to_dict() and LOIHI_SPLIT.to_dict()["y_split"] is True


def test_per_movement_rounding_streams_do_not_depend_on_the_batching(trained):
    rule, weights, batch, model = trained
    scales = calibrate_rule(rule, weights, batch, LOIHI, model)
    generators = movement_generators(0, range(2))
    together = _run(rule, weights, batch, FixedArithmetic(rule, LOIHI, scales, generators), model)
    for k in range(2):
        one = batch.select(slice(k, k + 1))
        alone = _run(rule, weights, one, FixedArithmetic(rule, LOIHI, scales, movement_generators(0, range(k, k + 1))),
                     model)
        for name in rule.plastic_names:
            assert torch.equal(alone.raw_tags[name][0], together.raw_tags[name][k]), (k, name)
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        _run(rule, weights, batch, FixedArithmetic(rule, LOIHI, scales, movement_generators(0, range(3))), model)
