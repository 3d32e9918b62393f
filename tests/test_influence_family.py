"""The RTRL family between exact RTRL and e-prop, from one forward recursion with a kept pattern
(eprop_l2l.inner_loop.rtrl, ``order``), float64, relative error ≤ 1e-10:

* SnAp-2 (``order=2``) == exact RTRL (== BPTT) when W_rec has no path of two coupling steps (sources → sinks);
* SnAp-2 == e-prop when W_rec = 0, under e-prop's reset convention (``paths="no_reset"``); with the reset path
  (the rules' default) it keeps there what OSTL keeps, the exact gradient, which e-prop is not;
* OSTL (``order=1``) == BPTT for one layer without lateral recurrence (W_rec = 0), reset included; with
  recurrence, the registered rule's reverse mode (BPTT of ``paths="internal"``) == its forward influence form,
  LIF / ALIF / CUBA / LSTM / rate, through autograd's loop and the spiking loop's hand-written backward;
* each is an approximation once longer paths exist (the comparisons can fail), the kept pattern is the one the
  coupling graph says, and its size lies between e-prop's and RTRL's;
* the sparse storage (``storage="sparse"``, :mod:`eprop_l2l.inner_loop.influence_blocks`: the kept entries
  alone) equals the dense reference to float64 rounding (≤ 1e-12) for every cell and order, and holds exactly the
  entries the dense pattern keeps (pinned for one network).
"""

from __future__ import annotations

import pytest
import torch

from eprop_l2l.cells.lstm import LSTM
from eprop_l2l.cells.rate import RateRNN
from eprop_l2l.error_modules.feedback import Feedback
from eprop_l2l.errors import ConfigError
from eprop_l2l.inner_loop.bptt import bptt_grads
from eprop_l2l.inner_loop.eprop import eprop_fused
from eprop_l2l.inner_loop.influence_blocks import dense_entries, kept_entries, reachable
from eprop_l2l.inner_loop.losses import Loss
from eprop_l2l.inner_loop.regularization import RateRegularizer
from eprop_l2l.inner_loop.rtrl import influence_pattern, rtrl_grads

from .builders import make_cell, make_trial, relative_error

REG = RateRegularizer(coefficient=2.0, target_hz=20.0, dt_ms=1.0)
NAMES = ("w_in", "w_rec", "w_out", "b_out")
KINDS = ["lif", "alif", "cuba_lif"]


def trial(kind: str, n_rec: int = 6, steps: int = 40, **kw):
    """Weak inputs: the current-based cell integrates them twice (its membrane stays near the threshold)."""
    return make_trial(make_cell(kind, n_rec=n_rec), batch=2, steps=steps, **{"input_gain": 0.2, **kw})


def sources_to_sinks(w_rec: torch.Tensor, n_sources: int) -> torch.Tensor:
    """W_rec with only the connections from the first ``n_sources`` neurons to the others: no path of two steps,
    scaled up so that the sinks feel the sources."""
    out = torch.zeros_like(w_rec)
    out[n_sources:, :n_sources] = 3.0 * w_rec[n_sources:, :n_sources]
    return out


@pytest.mark.parametrize("kind", KINDS)
def test_snap2_is_exact_rtrl_without_paths_of_two_steps(kind):
    network, params, x, target, mask, _ = trial(kind)
    params["w_rec"] = sources_to_sinks(params["w_rec"], 3)
    assert not (params["w_rec"].abs() @ params["w_rec"].abs()).any()  # no path of two coupling steps
    exact, value = bptt_grads(network, params, x, target, mask, Loss(), REG)
    snap2, snap_value = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=2)
    assert torch.allclose(snap_value, value, rtol=1e-12)
    for name in NAMES:
        assert exact[name].norm() > 0
        assert relative_error(snap2[name], exact[name]) <= 1e-10, name
    if kind == "lif":  # one step of coupling matters here: the kept pattern does
        ostl, _ = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=1)
        assert relative_error(ostl["w_in"], exact["w_in"]) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_snap2_is_eprop_without_recurrent_weights(kind):
    network, params, x, target, mask, _ = trial(kind)
    params["w_rec"] = torch.zeros_like(params["w_rec"])
    eprop = eprop_fused(network, params, x, target, mask, Loss(), Feedback("symmetric", network.cell.n_rec, 2),
                        regularizer=REG)
    same_reset, _ = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=2, paths="no_reset")
    exact, _ = bptt_grads(network, params, x, target, mask, Loss(), REG)
    for name in NAMES:
        assert eprop.grads[name].norm() > 0
        assert relative_error(same_reset[name], eprop.grads[name]) <= 1e-10, name
    # the reset path is what differs; with it SnAp-2 keeps what OSTL keeps here and is exact (next test)
    assert relative_error(eprop.grads["w_in"], exact["w_in"]) > 1e-3


@pytest.mark.parametrize("kind", KINDS)
def test_ostl_is_bptt_for_one_layer_without_recurrence(kind):
    network, params, x, target, mask, _ = trial(kind)
    params["w_rec"] = torch.zeros_like(params["w_rec"])
    exact, value = bptt_grads(network, params, x, target, mask, Loss(), REG)
    ostl, ostl_value = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=1)
    assert torch.allclose(ostl_value, value, rtol=1e-12)
    for name in NAMES:
        assert exact[name].norm() > 0
        assert relative_error(ostl[name], exact[name]) <= 1e-10, name


def other_cell(kind: str):
    return LSTM(n_in=4, n_rec=5) if kind == "lstm" else RateRNN(n_in=4, n_rec=5, tau=5.0, dt_ms=1.0)


@pytest.mark.parametrize("kind", [*KINDS, "lstm", "rate"])
def test_ostl_reverse_mode_equals_its_forward_influence_form(kind):
    if kind in KINDS:
        network, params, x, target, mask, _ = trial(kind, rec_gain=2.0)
    else:  # self-connections: the own unit's recurrent weight is an internal path
        network, params, x, target, mask, _ = make_trial(other_cell(kind), batch=2, steps=20)
    reg = REG if kind in KINDS else None
    forward, value = rtrl_grads(network, params, x, target, mask, Loss(), reg, order=1)
    reverse, reverse_value = bptt_grads(network, params, x, target, mask, Loss(), reg, paths="internal")
    exact, _ = bptt_grads(network, params, x, target, mask, Loss(), reg)
    local, _ = bptt_grads(network, params, x, target, mask, Loss(), reg, paths="local")
    assert torch.allclose(reverse_value, value, rtol=1e-12)
    for name in forward:
        assert forward[name].norm() > 0
        assert relative_error(reverse[name], forward[name]) <= 1e-10, name
    def differs(other):
        return max(relative_error(reverse[n], other[n]) for n in ("w_in", "w_rec")) > 1e-3

    assert differs(exact) and differs(local)  # lateral recurrence: an approximation, and not e-prop's paths
    if kind in ("lif", "alif"):  # the one-node loop's hand-written backward (its kernel has no code for these paths)
        fast, _ = bptt_grads(network, params, x, target, mask, Loss(), reg, paths="internal", fast=True)
        for name in forward:
            assert relative_error(fast[name], reverse[name]) <= 1e-12, name


def test_with_longer_paths_both_approximate_and_snap2_is_closer():
    """A chain 0 → 1 → … → 5: paths of up to five coupling steps."""
    network, params, x, target, mask, _ = trial("lif", n_rec=6, steps=50, input_gain=0.3)
    chain = torch.zeros_like(params["w_rec"])
    chain[1:, :-1] = torch.diag(5.0 * params["w_rec"].diagonal(-1))  # strong: credit crosses several neurons
    params["w_rec"] = chain
    exact, _ = bptt_grads(network, params, x, target, mask, Loss(), REG)
    errors = {order: relative_error(rtrl_grads(network, params, x, target, mask, Loss(), REG, order=order)[0]["w_in"],
                                    exact["w_in"]) for order in (1, 2, 6)}
    print("relative error of w_in by order:", errors)
    assert errors[2] > 1e-6 and errors[1] > errors[2]  # paths longer than two steps exist: approximations
    assert errors[6] <= 1e-10  # five coupling steps reach the end of the chain: order 6 keeps all of M


def test_the_kept_pattern_follows_the_coupling_graph():
    network, params, *_ = trial("lif", n_rec=4)
    w = torch.zeros(4, 4, dtype=torch.float64)
    w[1, 0] = w[2, 1] = 1.0  # 0 → 1 → 2; neuron 3 isolated
    params["w_rec"] = w
    names = ["w_in", "w_rec", "w_out"]
    batch, n, n_in = 2, 4, network.cell.n_in
    n_cell_rows = len(network.cell.init_state(batch)) * batch * n
    for order, reach in ((1, torch.eye(4)), (2, torch.eye(4) + w), (3, torch.eye(4) + w + w @ w)):
        kept = influence_pattern(network, params, names, batch, order)
        s, p = kept.shape
        assert (s, p) == (n_cell_rows, n * n_in + n * n + 2 * n)  # the cell's rows; the readout's follow from them
        w_in_block = kept[:, : n * n_in].reshape(-1, batch, n, n, n_in)  # field, b, k | j, i
        expected = (reach > 0)[None, None, :, :, None].expand_as(w_in_block)
        assert torch.equal(w_in_block, expected), order
        assert kept[:, n * n_in + n * n :].all()  # the readout's weights
    sizes = [int(influence_pattern(network, params, names, batch, order).sum()) for order in (1, 2, 3)]
    assert sizes[0] < sizes[1] < sizes[2] < s * p


def test_bad_order_and_paths_are_refused_in_one_line():
    network, params, x, target, mask, _ = trial("lif", n_rec=3, steps=2)
    per_task = {k: v.expand(2, *v.shape) for k, v in params.items()}
    for weights, keywords, key in ((params, {"order": 0}, "rtrl.order"), (params, {"paths": "none"}, "rtrl.paths"),
                                   (params, {"storage": "packed"}, "rtrl.storage"),
                                   (per_task, {"storage": "sparse"}, "rtrl.storage")):
        with pytest.raises(ConfigError) as err:
            rtrl_grads(network, weights, x, target, mask, Loss(), **keywords)
        assert str(err.value).startswith(f"{key}: ") and "\n" not in str(err.value)


def sparse_recurrence(network, params, keep: float = 0.5) -> None:
    """Drop the weaker recurrent weights (in place): a coupling graph with paths of several lengths."""
    w = params["w_rec"]
    w[w.abs() < keep] = 0.0


@pytest.mark.parametrize("order", [1, 2, None])
@pytest.mark.parametrize("kind", [*KINDS, "lstm", "rate"])
def test_sparse_storage_equals_the_dense_reference(kind, order):
    if kind in KINDS:
        network, params, x, target, mask, _ = trial(kind, steps=25, rec_gain=2.0, input_gain=0.4)
        sparse_recurrence(network, params)
    else:
        network, params, x, target, mask, _ = make_trial(other_cell(kind), batch=2, steps=15)
        sparse_recurrence(network, params, 0.3)
    reg = REG if kind in KINDS else None
    dense, value = rtrl_grads(network, params, x, target, mask, Loss(), reg, order=order)
    sparse, sparse_value = rtrl_grads(network, params, x, target, mask, Loss(), reg, order=order, storage="sparse",
                                      chunk=7)  # several chunks of pair products
    assert torch.allclose(sparse_value, value, rtol=1e-12)
    assert sparse.keys() == dense.keys()
    for name in dense:
        assert dense[name].norm() > 0, name
        assert relative_error(sparse[name], dense[name]) <= 1e-12, name


def test_sparse_storage_under_e_props_reset_convention():
    network, params, x, target, mask, _ = trial("alif", steps=25, rec_gain=2.0)
    sparse_recurrence(network, params)
    dense, _ = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=2, paths="no_reset")
    sparse, _ = rtrl_grads(network, params, x, target, mask, Loss(), REG, order=2, paths="no_reset", storage="sparse")
    for name in dense:
        assert relative_error(sparse[name], dense[name]) <= 1e-12, name


def test_the_sparse_influence_holds_the_kept_entries_alone():
    """16 LIF neurons, each receiving from one other (a fixed random fan-in of 1), 3 inputs, batch 2: the sparse
    storage holds what the dense pattern keeps of the cell's columns (the readout's never act on the cell)."""
    cell = make_cell("lif", n_in=3, n_rec=16)
    network, params, *_ = make_trial(cell, batch=2, steps=2)
    g = torch.Generator().manual_seed(5)
    w = torch.zeros(16, 16, dtype=torch.float64)
    for k in range(16):
        sources = [j for j in torch.randperm(16, generator=g).tolist() if j != k]
        w[k, sources[0]] = 1.0
    params["w_rec"] = w
    names = ["w_in", "w_rec", "w_out", "b_out"]
    cell_columns = 16 * 3 + 16 * 16
    for order in (1, 2, 3):
        pattern = influence_pattern(network, params, names, 2, order)
        assert kept_entries(network, params, names, 2, order) == int(pattern[:, :cell_columns].sum()), order
    assert kept_entries(network, params, names, 2, None) == 3 * 2 * 16 * cell_columns  # exact RTRL: every pair
    reach = reachable(network, params, 2)
    assert int(reach.sum()) == 16 + 16  # itself and the one neuron each receives from
    dense = dense_entries(network, params, names, 2)
    assert dense == 3 * 2 * 16 * (cell_columns + 2 * 16 + 2)  # 3 fields (v, z, refractory) × B × N × P
    fraction = {order: kept_entries(network, params, names, 2, order) / dense for order in (1, 2, 3)}
    print("kept fraction by order:", fraction)
    # per kept pair one neuron's 3 + 16 weight columns, against the 338 columns of all parameters per state row
    assert fraction[1] == 19 / 338 and fraction[2] == 2 * 19 / 338  # 5.62 % and 11.24 %
    assert fraction[3] == 3 * 19 / 338  # a functional graph: one more neuron per pair length
    assert fraction[1] < fraction[2] < fraction[3] < 1


@pytest.mark.parametrize("plastic", [("w_in", "w_rec"), ("w_out", "b_out"), ("w_rec",)])
def test_sparse_storage_with_part_of_the_parameters_plastic(plastic):
    """Only the cell's tensors, only the readout's, or one tensor: the same gradient as the dense reference."""
    network, params, x, target, mask, _ = trial("lif", steps=25, rec_gain=2.0, input_gain=0.4)
    sparse_recurrence(network, params)
    dense, value = rtrl_grads(network, params, x, target, mask, Loss(), REG, plastic, order=2)
    sparse, sparse_value = rtrl_grads(network, params, x, target, mask, Loss(), REG, plastic, order=2,
                                      storage="sparse")
    assert list(sparse) == list(plastic) and torch.allclose(sparse_value, value, rtol=1e-12)
    for name in plastic:
        assert dense[name].norm() > 0, name
        assert relative_error(sparse[name], dense[name]) <= 1e-12, name
