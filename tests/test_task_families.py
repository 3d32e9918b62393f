"""Task families: shapes, reproducibility, the statistics of the sampled inputs and targets, validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from eprop_l2l.errors import ConfigError
from eprop_l2l.task_families import (
    FAMILIES,
    EvidenceAccumulation,
    SumOfSines,
    TaskBatch,
    TaskFamily,
    arm,
    make_task_family,
)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_batches_equal(a: TaskBatch, b: TaskBatch) -> None:
    torch.testing.assert_close(a.inputs, b.inputs, rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets, rtol=0, atol=0)
    torch.testing.assert_close(a.mask, b.mask, rtol=0, atol=0)
    assert a.extra.keys() == b.extra.keys()
    for key in a.extra:
        torch.testing.assert_close(a.extra[key], b.extra[key], rtol=0, atol=0)


# a short trial; the high cue rate keeps every cue window non-silent (P(no spike) = 0.6^40 per cue)
SMALL_EVIDENCE = dict(n_in=8, n_cues=3, cue_ms=20, cue_spacing_ms=30, silence_ms=10, delay_ms=40, recall_ms=25,
                      input_rate_hz=400.0, dt_ms=1.0)
# small versions of the families without an n_steps field (tests/test_eprop3_tasks.py tests them further)
SMALL = {"evidence": SMALL_EVIDENCE, "copy_repeat": dict(pattern_length=4, n_repeats=2, frame_steps=3, dt_ms=1.0),
         "store_recall": dict(n_symbols=5, symbol_ms=20.0, max_delay=3, input_rate_hz=200.0, dt_ms=1.0)}


# ------------------------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sines_shapes_and_dtypes(dtype):
    fam = SumOfSines(n_in=20, n_out=3, n_steps=300, dt_ms=1.0)
    batch = fam.sample(5, gen(0), dtype=dtype)
    assert isinstance(fam, TaskFamily)
    assert (fam.n_in, fam.n_out, fam.n_steps, fam.loss) == (20, 3, 300, "mse")
    assert batch.inputs.shape == (5, 300, 20) and batch.inputs.dtype == dtype
    assert batch.targets.shape == (5, 300, 3) and batch.targets.dtype == dtype
    assert batch.mask.shape == (5, 300) and batch.mask.dtype == dtype
    assert torch.all(batch.mask == 1)
    assert set(batch.inputs.unique().tolist()) <= {0.0, 1.0}
    assert batch.inputs.is_contiguous() and batch.targets.is_contiguous()
    assert batch.extra["amplitudes"].shape == (5, 3, 4) and batch.extra["phases"].shape == (5, 3, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_evidence_shapes_and_dtypes(dtype):
    fam = EvidenceAccumulation(dt_ms=1.0)
    assert isinstance(fam, TaskFamily)
    assert (fam.n_in, fam.n_out, fam.n_steps, fam.loss) == (40, 2, 2250, "cross_entropy")
    batch = fam.sample(3, gen(0), dtype=dtype)
    assert batch.inputs.shape == (3, 2250, 40) and batch.inputs.dtype == dtype
    assert batch.targets.shape == (3, 2250, 2) and batch.targets.dtype == dtype
    assert batch.mask.shape == (3, 2250) and batch.mask.dtype == dtype
    assert set(batch.inputs.unique().tolist()) <= {0.0, 1.0}
    assert batch.extra["label"].shape == (3,) and batch.extra["label"].dtype == torch.long
    assert batch.extra["cues"].shape == (3, 7)


@pytest.mark.parametrize(("n_cues", "expected"), [(7, 2250), (3, 1650), (1, 1350), (9, 2550)])
def test_evidence_length_formula(n_cues, expected):
    # the paper's T = n_cues * 150 + 1200 with the default timing fields
    assert EvidenceAccumulation(n_cues=n_cues, dt_ms=1.0).n_steps == expected == n_cues * 150 + 1200
    small = EvidenceAccumulation(**SMALL_EVIDENCE)
    assert small.n_steps == 10 + 2 * 30 + 20 + 40 + 25
    assert small.sample(2, gen(0)).inputs.shape == (2, small.n_steps, 8)


# ------------------------------------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_seed_same_batch_different_seed_different_batch(name):
    fam = make_task_family(name, **SMALL.get(name, {"n_steps": 200, "dt_ms": 1.0}))
    a, b, c = fam.sample(16, gen(3)), fam.sample(16, gen(3)), fam.sample(16, gen(4))
    assert_batches_equal(a, b)
    assert not torch.equal(a.targets, c.targets)
    if name == "evidence":
        assert not torch.equal(a.inputs, c.inputs)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_global_rng_is_neither_used_nor_consulted(name):
    fam = make_task_family(name, **SMALL.get(name, {"n_steps": 200, "dt_ms": 1.0}))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    a = fam.sample(4, gen(1))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(12345)
    assert_batches_equal(a, fam.sample(4, gen(1)))


@pytest.mark.parametrize("name", sorted(FAMILIES))
@pytest.mark.parametrize("rows", [slice(0, 3), slice(3, 6), slice(2, 5)], ids=["first", "second", "straddling"])
def test_a_share_of_a_batch_is_its_rows_and_advances_the_generator_as_the_whole_batch(name, rows):
    """A data-parallel process draws its share with sample_rows: bit for bit the rows of the whole batch, and the
    next batch the same as after the whole one (the arm codes only its share's chunks: 200 steps × 6 tasks cross
    several CODE_CHUNK_ROWS boundaries with the small chunks set here)."""
    fam = make_task_family(name, **SMALL.get(name, {"n_steps": 200, "dt_ms": 1.0}))
    whole_gen, share_gen = gen(5), gen(5)
    whole = fam.sample(6, whole_gen)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(arm, "CODE_CHUNK_ROWS", 150)
        share = fam.sample_rows(6, share_gen, rows)
    assert_batches_equal(share, whole.select(rows))
    assert_batches_equal(fam.sample(2, share_gen), fam.sample(2, whole_gen))


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_draws_do_not_depend_on_dtype(name):
    fam = make_task_family(name, **SMALL.get(name, {"n_steps": 200, "dt_ms": 1.0}))
    a, b = fam.sample(6, gen(2), dtype=torch.float32), fam.sample(6, gen(2), dtype=torch.float64)
    torch.testing.assert_close(a.inputs, b.inputs.float(), rtol=0, atol=0)
    torch.testing.assert_close(a.targets, b.targets.float(), rtol=0, atol=1e-6)


def test_sines_frozen_input_identical_across_calls_and_batch():
    fam = SumOfSines(n_steps=400, dt_ms=1.0)
    a, b = fam.sample(8, gen(0)), fam.sample(3, gen(99))
    assert torch.equal(a.inputs, a.inputs[:1].expand_as(a.inputs))
    assert torch.equal(a.inputs[0], b.inputs[0])
    assert torch.equal(a.inputs[0], fam.frozen_inputs())
    # an equal family built separately sees the same sample; another input_seed does not
    assert torch.equal(SumOfSines(n_steps=400, dt_ms=1.0).sample(1, gen(5)).inputs[0], a.inputs[0])
    assert not torch.equal(SumOfSines(n_steps=400, input_seed=1, dt_ms=1.0).sample(1, gen(0)).inputs[0], a.inputs[0])
    # writing into a returned batch does not touch the cached sample
    a.inputs.zero_()
    assert torch.equal(fam.sample(1, gen(0)).inputs[0], b.inputs[0])


def test_sines_unfrozen_input_differs_across_tasks_but_targets_do_not_change():
    frozen = SumOfSines(n_steps=300, dt_ms=1.0).sample(4, gen(0))
    fresh = SumOfSines(n_steps=300, frozen_input=False, dt_ms=1.0).sample(4, gen(0))
    assert not torch.equal(fresh.inputs[0], fresh.inputs[1])
    assert torch.equal(frozen.targets, fresh.targets)


# ------------------------------------------------------------------------------------------- sum of sines


def test_sines_targets_start_at_zero_and_are_normalised():
    batch = SumOfSines(n_out=3, n_steps=1000, dt_ms=1.0).sample(50, gen(0), dtype=torch.float64)
    y = batch.targets  # [B, T, n_out]
    torch.testing.assert_close(y[:, 0], torch.zeros(50, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(y.abs().amax(dim=1), torch.ones(50, 3, dtype=torch.float64), rtol=0, atol=1e-12)
    # tasks and channels differ from each other
    assert (y[1:] - y[:1]).abs().amax() > 0.1
    assert (y[..., 1:] - y[..., :1]).abs().amax() > 0.1


def _sine_basis(periods, n_steps):
    t = torch.arange(n_steps, dtype=torch.float64)
    cols = [torch.ones_like(t)]
    for p in periods:
        cols += [torch.sin(2 * math.pi * t / p), torch.cos(2 * math.pi * t / p)]
    return torch.stack(cols, dim=1)  # [T, 1 + 2K]


def test_sines_spectral_content_is_the_four_periods():
    fam = SumOfSines(n_out=2, dt_ms=1.0)
    y = fam.sample(20, gen(1), dtype=torch.float64).targets  # [B, T, 2]
    rhs = y.permute(1, 0, 2).reshape(fam.n_steps, -1)  # [T, B * n_out]

    def residual(periods):
        basis = _sine_basis(periods, fam.n_steps)
        coef = torch.linalg.lstsq(basis, rhs).solution
        return (basis @ coef - rhs).abs().max().item()

    assert residual(fam.periods_ms) < 1e-5  # constant + 8 sin/cos functions reconstruct every target
    assert residual((1000.0, 500.0, 333.0, 250.0)) > 1e-2  # a wrong period does not
    # and each of the four components carries amplitude
    basis = _sine_basis(fam.periods_ms, fam.n_steps)
    coef = torch.linalg.lstsq(basis, rhs).solution[1:].reshape(4, 2, -1)
    assert coef.norm(dim=1).min() > 0.05


def test_sines_targets_follow_the_recorded_parameters():
    fam = SumOfSines(n_out=2, n_steps=500, amp_range=(0.5, 2.0), dt_ms=1.0)
    b = fam.sample(10, gen(7), dtype=torch.float64)
    a, phi = b.extra["amplitudes"], b.extra["phases"]
    assert a.min() >= 0.5 and a.max() <= 2.0 and phi.min() >= 0 and phi.max() <= 2 * math.pi
    t = torch.arange(500, dtype=torch.float64)
    periods = torch.tensor(fam.periods_ms, dtype=torch.float64)
    raw = (a[..., None] * torch.sin(2 * math.pi * t / periods[:, None] + phi[..., None])).sum(dim=2)  # [B, out, T]
    expected = (raw - raw[..., :1]) / (raw - raw[..., :1]).abs().amax(dim=-1, keepdim=True)
    torch.testing.assert_close(b.targets, expected.transpose(1, 2), rtol=0, atol=1e-12)
    torch.testing.assert_close(b.extra["offset"], raw[..., 0])


def test_sines_amplitudes_and_phases_cover_their_ranges():
    b = SumOfSines(n_steps=10, dt_ms=1.0).sample(2000, gen(0), dtype=torch.float64)
    a, phi = b.extra["amplitudes"], b.extra["phases"]
    assert abs(a.mean().item() - 1.25) < 0.03 and a.min() < 0.55 and a.max() > 1.95
    assert abs(phi.mean().item() - math.pi) < 0.06 and phi.min() < 0.1 and phi.max() > 2 * math.pi - 0.1


@pytest.mark.parametrize(("rate", "dt"), [(50.0, 1.0), (20.0, 2.0)])
def test_sines_poisson_rate(rate, dt):
    fam = SumOfSines(input_rate_hz=rate, dt_ms=dt)
    x = fam.frozen_inputs()  # 100 channels x 1000 steps
    measured_hz = x.mean().item() * 1000.0 / dt
    assert abs(measured_hz - rate) < 3.0  # ~4 standard deviations
    per_channel = x.mean(dim=0) * 1000.0 / dt
    assert per_channel.min() > 0 and per_channel.std() > 0  # every channel fires, not all alike
    # fresh (unfrozen) inputs have the same rate
    fresh = SumOfSines(input_rate_hz=rate, dt_ms=dt, frozen_input=False).sample(5, gen(0)).inputs
    assert abs(fresh.mean().item() * 1000.0 / dt - rate) < 1.5


# ------------------------------------------------------------------------------------------- evidence accumulation


def _cue_counts(fam: EvidenceAccumulation, inputs: torch.Tensor):
    """Spikes of the left and right groups in each cue window: [B, n_cues] each."""
    g = fam.groups
    left, right = [], []
    for onset in fam.cue_onsets:
        window = inputs[:, onset:onset + fam.cue_ms]
        left.append(window[..., g["left"]].sum(dim=(1, 2)))
        right.append(window[..., g["right"]].sum(dim=(1, 2)))
    return torch.stack(left, 1), torch.stack(right, 1)


@pytest.mark.parametrize("kwargs", [{}, {"n_cues": 3}, SMALL_EVIDENCE])
def test_evidence_label_is_the_majority_of_the_cues_seen_in_the_input(kwargs):
    fam = EvidenceAccumulation(**{"dt_ms": 1.0, **kwargs})
    batch = fam.sample(64, gen(0))
    left, right = _cue_counts(fam, batch.inputs)
    # exactly one side fires in each cue window (a silent active cue has probability < 1e-9)
    assert torch.all((left > 0) != (right > 0))
    seen = (right > 0).long()  # 1 = right
    assert torch.equal(seen, batch.extra["cues"])
    assert torch.equal(batch.extra["label"], (right > 0).sum(dim=1).gt(fam.n_cues // 2).long())
    assert torch.equal(batch.extra["label"], (right > 0).sum(dim=1).gt((left > 0).sum(dim=1)).long())
    assert 0 < batch.extra["label"].sum() < 64
    # targets: the one-hot label at every step
    onehot = torch.nn.functional.one_hot(batch.extra["label"], 2).float()
    assert torch.equal(batch.targets, onehot[:, None, :].expand_as(batch.targets))


def test_evidence_group_rates():
    fam = EvidenceAccumulation(dt_ms=1.0)
    batch = fam.sample(200, gen(1), dtype=torch.float64)
    x, cues, g, T = batch.inputs, batch.extra["cues"], fam.groups, fam.n_steps
    in_cue = torch.zeros(T, dtype=torch.bool)
    for onset in fam.cue_onsets:
        in_cue[onset:onset + fam.cue_ms] = True
    # during a cue, the group of its side fires at 40 Hz and the other side is silent
    active_spikes, active_steps, inactive_spikes = 0.0, 0, 0.0
    for i, onset in enumerate(fam.cue_onsets):
        w = x[:, onset:onset + fam.cue_ms]
        side_right = cues[:, i].bool()[:, None, None]
        right, left = w[..., g["right"]], w[..., g["left"]]
        active_spikes += torch.where(side_right, right, left).sum().item()
        inactive_spikes += torch.where(side_right, left, right).sum().item()
        active_steps += w.shape[0] * w.shape[1] * fam.group_size
    assert abs(active_spikes / active_steps * 1000.0 - 40.0) < 1.0
    assert inactive_spikes == 0
    # outside the cue windows the cue groups are silent
    assert x[:, ~in_cue][..., : 2 * fam.group_size].sum() == 0
    # background at 10 Hz throughout (checked in the first and second halves separately)
    bg = x[..., g["background"]]
    for half in (bg[:, : T // 2], bg[:, T // 2:]):
        assert abs(half.mean().item() * 1000.0 - 10.0) < 0.5
    # recall group at 40 Hz in the last recall_ms steps, silent before
    recall = x[..., g["recall"]]
    assert recall[:, : T - fam.recall_ms].sum() == 0
    assert abs(recall[:, T - fam.recall_ms:].mean().item() * 1000.0 - 40.0) < 1.5


def test_evidence_mask_is_exactly_the_recall_period():
    for kwargs in ({}, SMALL_EVIDENCE):
        fam = EvidenceAccumulation(**{"dt_ms": 1.0, **kwargs})
        mask = fam.sample(3, gen(0)).mask
        expected = torch.zeros(fam.n_steps)
        expected[-fam.recall_ms:] = 1
        assert torch.equal(mask, expected.expand(3, -1))
        assert mask.sum().item() == 3 * fam.recall_ms


def test_evidence_class_balance_and_cue_probability():
    fam = EvidenceAccumulation(**SMALL_EVIDENCE | {"n_cues": 7})
    batch = fam.sample(2000, gen(11))
    label, cues, likely = batch.extra["label"], batch.extra["cues"], batch.extra["likely_side"]
    assert abs(label.float().mean().item() - 0.5) < 0.05
    assert abs(likely.float().mean().item() - 0.5) < 0.05
    # each cue comes from the likely side with probability 0.7
    from_likely = (cues == likely[:, None]).float().mean().item()
    assert abs(from_likely - 0.7) < 0.02
    # with p = 0.7 and 7 cues, P(label == likely side) = P(Bin(7, 0.7) >= 4) = 0.874
    assert abs((label == likely).float().mean().item() - 0.874) < 0.03


def test_evidence_p_majority_one_makes_every_cue_agree():
    batch = EvidenceAccumulation(**SMALL_EVIDENCE, p_majority=1.0).sample(50, gen(0))
    cues, label = batch.extra["cues"], batch.extra["label"]
    assert torch.equal(cues, label[:, None].expand_as(cues))


# ------------------------------------------------------------------------------------------- registry, validation


def test_registry_builds_each_family_with_overrides():
    assert sorted(FAMILIES) == ["arm_brownian", "arm_sines", "copy_repeat", "evidence", "scorbot_brownian", "sines",
                            "store_recall"]
    fam = make_task_family("sines", n_steps=50, periods_ms=[100, 50], dt_ms=1.0)
    assert isinstance(fam, SumOfSines) and fam.n_steps == 50 and fam.periods_ms == (100.0, 50.0)
    ev = make_task_family("evidence", n_cues=3, dt_ms=1.0)
    assert isinstance(ev, EvidenceAccumulation) and ev.n_cues == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        fam.n_steps = 3


@pytest.mark.parametrize(
    ("name", "kwargs", "key"),
    [
        ("sines", {"n_steps": 0}, "sines.n_steps"),
        ("sines", {"n_in": 0}, "sines.n_in"),
        ("sines", {"n_out": 1.5}, "sines.n_out"),
        ("sines", {"input_rate_hz": -1.0}, "sines.input_rate_hz"),
        ("sines", {"input_rate_hz": 2000.0}, "sines.input_rate_hz"),
        ("sines", {"dt_ms": 0.0}, "sines.dt_ms"),
        ("sines", {"periods_ms": ()}, "sines.periods_ms"),
        ("sines", {"periods_ms": (100.0, -5.0)}, "sines.periods_ms"),
        ("sines", {"amp_range": (2.0, 0.5)}, "sines.amp_range"),
        ("sines", {"amp_range": (1.0,)}, "sines.amp_range"),
        ("sines", {"frozen_input": "yes"}, "sines.frozen_input"),
        ("sines", {"input_seed": 1.0}, "sines.input_seed"),
        ("sines", {"foo": 1}, "sines.foo"),
        ("evidence", {"n_cues": 4}, "evidence.n_cues"),
        ("evidence", {"n_cues": 0}, "evidence.n_cues"),
        ("evidence", {"input_rate_hz": -40.0}, "evidence.input_rate_hz"),
        ("evidence", {"background_hz": -1.0}, "evidence.background_hz"),
        ("evidence", {"recall_hz": float("nan")}, "evidence.recall_hz"),
        ("evidence", {"cue_ms": 0}, "evidence.cue_ms"),
        ("evidence", {"recall_ms": 0}, "evidence.recall_ms"),
        ("evidence", {"silence_ms": -1}, "evidence.silence_ms"),
        ("evidence", {"cue_spacing_ms": 50}, "evidence.cue_spacing_ms"),
        ("evidence", {"n_in": 42}, "evidence.n_in"),
        ("evidence", {"p_majority": 1.5}, "evidence.p_majority"),
        ("evidence", {"n_steps": 100}, "evidence.n_steps"),
        ("evidence", {"loss": "mse"}, "evidence.loss"),
        ("walk", {}, "task"),
    ],
)
def test_bad_values_raise_config_error_naming_the_key(name, kwargs, key):
    with pytest.raises(ConfigError) as info:
        make_task_family(name, **{"dt_ms": 1.0, **kwargs})
    assert info.value.key == key
    assert str(info.value).startswith(f"{key}: ")


def test_unknown_family_and_field_messages():
    expected = (r"^task: unknown task family 'x' \(choose from arm_brownian, arm_sines, copy_repeat, evidence, "
                r"scorbot_brownian, sines, store_recall\)$")
    with pytest.raises(ConfigError, match=expected):
        make_task_family("x", dt_ms=1.0)
    with pytest.raises(ConfigError, match=r"^sines\.foo: unknown field"):
        make_task_family("sines", foo=1, dt_ms=1.0)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bad_batch_size(name):
    fam = make_task_family(name, dt_ms=1.0)
    with pytest.raises(ConfigError, match=rf"^{name}\.batch_size: "):
        fam.sample(0, gen(0))
