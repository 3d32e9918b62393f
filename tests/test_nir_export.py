"""NIR export (docs/nir.md): the written graph survives ``nir.write`` → ``nir.read`` bit for bit, its continuous-time
constants discretise back to our α, κ and input scales, a third-party NIR reader (spyx; snnTorch's converter
through nirtorch) reproduces our spike trains exactly where NIR can express the dynamics, the agreement is
measured (and below 1) where it cannot (refractoriness, a reader that resets to v_reset), and the constructs
NIR has no primitive for are refused in one line.

Skipped only when the ``nir`` package is missing; the readers (spyx, snntorch, nirtorch) are part of the
``dev`` extra and must be installed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

nir = pytest.importorskip("nir")

from eprop_l2l.cells.alif import ALIF  # noqa: E402
from eprop_l2l.cells.cuba_lif import CubaLIF  # noqa: E402
from eprop_l2l.cells.from_spec import cell_from_spec  # noqa: E402
from eprop_l2l.cells.lif import LIF  # noqa: E402
from eprop_l2l.cells.lstm import LSTM  # noqa: E402
from eprop_l2l.cells.network import RecurrentNetwork  # noqa: E402
from eprop_l2l.cells.rate import RateRNN  # noqa: E402
from eprop_l2l.cells.readout import LeakyReadout  # noqa: E402
from eprop_l2l.cells.spec import NeuronSpec  # noqa: E402
from eprop_l2l.error_modules.learned import LearnedErrorModule  # noqa: E402
from eprop_l2l.errors import ConfigError  # noqa: E402
from eprop_l2l.hardware.nir_export import (  # noqa: E402
    NIRLossWarning,
    compare_spikes,
    error_module_to_nir,
    export_learner_nir,
    network_to_nir,
    nir_fidelity,
    read_nir,
    simulate_nir,
    write_nir,
)

REPO = Path(__file__).resolve().parents[1]
TRAINED = REPO / "docs" / "results" / "arm_gpu"


def small_network(n_ref: int = 0, n_in: int = 6, n_rec: int = 30, n_out: int = 2, seed: int = 1,
                  input_scaling: str = "new", input_gain: float = 1.0, rec_gain: float = 0.5):
    """A random LIF network with float32 weights (exact in float64 too) and a readout bias; with the defaults and
    :func:`clock` it fires at about 100 Hz and no membrane comes within 1e-4 of the threshold."""
    cell = LIF(n_in=n_in, n_rec=n_rec, v_th=0.4, n_ref=n_ref, input_scaling=input_scaling, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(n_rec, n_out, input_scaling=input_scaling, dt_ms=1.0))
    g = torch.Generator().manual_seed(seed)
    params = network.init_params(g, torch.float32)
    params["w_in"] = params["w_in"] * input_gain
    params["w_rec"] = params["w_rec"] * rec_gain
    params["b_out"] = 0.1 * torch.randn(n_out, generator=g)
    return network, params


def clock(batch: int = 2, steps: int = 250, n_in: int = 6, seed: int = 1, p: float = 0.1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, steps, n_in, generator=g) < p).float()


def small_module(n_learner: int = 30, n_inputs: int = 6, n_context: int = 5, n_ref: int = 0, seed: int = 2):
    width = n_context + n_learner + n_inputs
    module = LearnedErrorModule(LIF(n_in=width, n_rec=20, v_th=0.4, n_ref=n_ref, dt_ms=1.0), n_learner, n_context,
                                n_inputs,
                                projection_scale=2.0, dt_ms=1.0)
    params = module.init_params(torch.Generator().manual_seed(seed), torch.float32)
    params["cell"]["w_in"] = params["cell"]["w_in"] * 3.0
    return module, params


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRLossWarning)
        return fn(*args, **kwargs)


def assert_graphs_equal(a, b):
    assert set(a.nodes) == set(b.nodes)
    assert sorted(map(tuple, a.edges)) == sorted(map(tuple, b.edges))
    assert dict(a.metadata) == dict(b.metadata)
    for name, node in a.nodes.items():
        other = b.nodes[name]
        assert type(node) is type(other), name
        for field in dataclasses.fields(node):
            if field.name in ("input_type", "output_type"):
                continue
            x, y = getattr(node, field.name), getattr(other, field.name)
            if isinstance(x, np.ndarray):
                assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), f"{name}.{field.name}"
            elif field.name == "metadata":
                assert set(x) == set(y), name
                for key in x:
                    assert x[key] == y[key], f"{name}.metadata.{key}: {x[key]!r} != {y[key]!r}"
            else:
                assert x == y, f"{name}.{field.name}"


# ---------------------------------------------------------------------------------------------- the graph


def test_graph_layout_and_arrays_are_ours():
    network, params = small_network(n_ref=0)
    graph = network_to_nir(network, params)
    assert set(graph.nodes) == {"input", "w_in", "lif", "w_rec", "w_out", "readout", "output"}
    assert ("lif", "w_rec") in graph.edges and ("w_rec", "lif") in graph.edges
    assert isinstance(graph.nodes["lif"], nir.LIF) and isinstance(graph.nodes["readout"], nir.LI)
    assert isinstance(graph.nodes["w_out"], nir.Affine)  # the readout has a bias
    for key, node in (("w_in", "w_in"), ("w_rec", "w_rec"), ("w_out", "w_out")):
        assert np.array_equal(graph.nodes[node].weight, params[key].numpy())
        assert graph.nodes[node].weight.dtype == np.float32
    assert np.array_equal(graph.nodes["w_out"].bias, params["b_out"].numpy())
    lif = graph.nodes["lif"]
    assert np.all(lif.v_threshold == 0.4) and np.all(lif.v_reset == 0) and np.all(lif.v_leak == 0)
    assert lif.metadata["reset"] == "subtract_v_th_next_step" and lif.metadata["n_ref"] == 0
    assert graph.metadata["dt_s"] == 1e-3 and graph.metadata["role"] == "learning_network"


@pytest.mark.parametrize("integrator", ["euler", "exp"])
@pytest.mark.parametrize("scaling", ["new", "old"])
def test_time_constants_discretise_back_to_ours(integrator, scaling):
    cell = LIF(n_in=3, n_rec=4, tau_m=30.0, v_th=0.5, n_ref=0, input_scaling=scaling, dt_ms=2.0)
    readout = LeakyReadout(4, 2, tau_out=15.0, dt_ms=2.0, input_scaling=scaling, bias=False)
    network = RecurrentNetwork(cell, readout)
    params = network.init_params(torch.Generator().manual_seed(0))
    graph = network_to_nir(network, params, integrator=integrator)
    dt = graph.metadata["dt_s"]
    assert dt == pytest.approx(2e-3, rel=0, abs=1e-18)
    decay = (lambda tau: 1 - dt / tau) if integrator == "euler" else (lambda tau: np.exp(-dt / tau))
    lif, li = graph.nodes["lif"], graph.nodes["readout"]
    np.testing.assert_allclose(decay(lif.tau), cell.spec.alpha, rtol=1e-14)
    np.testing.assert_allclose(lif.r * dt / lif.tau, cell.spec.input_scale, rtol=1e-14)
    np.testing.assert_allclose(decay(li.tau), readout.spec.kappa, rtol=1e-14)
    np.testing.assert_allclose(li.r * dt / li.tau, readout.spec.input_scale, rtol=1e-14)
    assert lif.metadata["alpha"] == cell.spec.alpha and li.metadata["kappa"] == readout.spec.kappa
    assert isinstance(graph.nodes["w_out"], nir.Linear)  # no bias
    if scaling == "old" and integrator == "euler":
        np.testing.assert_allclose(lif.r, 1.0, rtol=1e-14)  # the "old" convention is NIR's unit resistance
    with pytest.raises(ConfigError, match="nir.integrator"):
        network_to_nir(network, params, integrator="rk4")


def test_write_read_round_trip_is_exact(tmp_path):
    network, params = small_network(n_ref=3)
    graph = quiet(network_to_nir, network, params)
    back = read_nir(write_nir(tmp_path / "sub" / "network.nir", graph))
    assert_graphs_equal(graph, back)
    module, em = small_module(n_ref=2)
    graph = quiet(error_module_to_nir, module, em)
    back = nir.read(write_nir(tmp_path / "em.nir", graph))
    assert_graphs_equal(graph, back)
    assert back.nodes["em_lif"].metadata["n_ref"] == 2
    assert back.metadata["input_layout"] == "context[0:5], learner_spikes[5:35], learner_inputs[35:41]"


def test_per_task_parameters_need_a_task():
    network, params = small_network()
    per_task = {k: v.expand(3, *v.shape).clone() for k, v in params.items()}
    per_task["w_rec"][1] += 1.0
    with pytest.raises(ConfigError, match="params.w_in: has a task dimension"):
        network_to_nir(network, per_task)
    graph = network_to_nir(network, per_task, task=1)
    assert np.array_equal(graph.nodes["w_rec"].weight, per_task["w_rec"][1].numpy())
    assert graph.metadata["task"] == 1


# --------------------------------------------------------------------------------------------- refusals


def one_line(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text
    return text


def test_alif_adaptation_lstm_and_rate_units_are_refused():
    readout = LeakyReadout(5, 2, dt_ms=1.0)
    alif = RecurrentNetwork(ALIF(n_in=3, n_rec=5, beta=0.5, n_adaptive=2, dt_ms=1.0), readout)
    with pytest.raises(ConfigError) as err:
        network_to_nir(alif, alif.init_params(torch.Generator().manual_seed(0)))
    assert "ALIF threshold adaptation" in one_line(err)
    lstm = RecurrentNetwork(LSTM(n_in=3, n_rec=5), readout)
    with pytest.raises(ConfigError) as err:
        network_to_nir(lstm, lstm.init_params(torch.Generator().manual_seed(0)))
    assert "LSTM" in one_line(err)
    rate = RecurrentNetwork(RateRNN(n_in=3, n_rec=5, dt_ms=1.0), readout)
    with pytest.raises(ConfigError) as err:
        network_to_nir(rate, rate.init_params(torch.Generator().manual_seed(0)))
    assert "rate units" in one_line(err)
    # an ALIF population without adapting neurons is a LIF population
    plain = RecurrentNetwork(ALIF(n_in=3, n_rec=5, n_adaptive=0, n_ref=0, dt_ms=1.0), readout)
    graph = network_to_nir(plain, plain.init_params(torch.Generator().manual_seed(0)))
    assert graph.nodes["lif"].metadata["eprop_model"] == "alif"


def test_refractoriness_warns_or_is_refused_when_strict():
    network, params = small_network(n_ref=4)
    with pytest.warns(NIRLossWarning, match="refractoriness"):
        graph = network_to_nir(network, params)
    assert graph.nodes["lif"].metadata["n_ref"] == 4
    assert "refractory" in graph.nodes["lif"].metadata["nir_cannot_express"]
    with pytest.raises(ConfigError) as err:
        network_to_nir(network, params, strict=True)
    assert "refractoriness (4 steps)" in one_line(err)
    with warnings.catch_warnings():
        warnings.simplefilter("error", NIRLossWarning)
        network_to_nir(small_network(n_ref=0)[0], params, strict=True)  # nothing lost: no warning


# ------------------------------------------------------------------------------------- reader simulations


def test_spyx_reproduces_our_spikes_exactly_in_float64():
    network, params = small_network(n_ref=0)
    x = clock(steps=250)
    result = nir_fidelity(network, params, x, reader="spyx", literal=False)
    exact = result["as_exported"]
    print("spyx, n_ref = 0:", exact)
    assert exact["steps"] >= 200
    assert 0.02 < exact["spikes_ours"] / (exact["trials"] * exact["steps"] * exact["neurons"]) < 0.3
    assert exact["identical"] and exact["spike_agreement"] == 1.0 and exact["first_divergence_step"] is None
    assert exact["output_rel_max_diff"] <= 1e-12  # the readout, from the same spikes, to float64 rounding
    assert exact["min_margin_to_threshold"] > 1e-9  # no membrane at a float64 tie with the threshold
    assert result["semantics_matched"] is exact


def test_spyx_simulation_differs_if_the_graph_is_wrong():
    """The comparison can fail: a graph with a perturbed threshold is not reproduced."""
    network, params = small_network(n_ref=0)
    x = clock(steps=250)
    graph = network_to_nir(network, params)
    graph.nodes["lif"].v_threshold = graph.nodes["lif"].v_threshold * 1.05
    run = simulate_nir(graph, x.double(), reader="spyx")
    with torch.no_grad():
        trajectory, y = network.run({k: v.double() for k, v in params.items()}, x.double())
    record = compare_spikes(trajectory.outputs, run.spikes, y, run.output)
    assert not record["identical"] and record["spike_agreement"] < 1.0


@pytest.mark.parametrize("scaling", ["new", "old"])
def test_snntorch_with_the_metadata_reset_reproduces_our_spikes_in_float32(scaling):
    network, params = small_network(n_ref=0, input_scaling=scaling, **({} if scaling == "new" else
                                                                          dict(input_gain=20.0, rec_gain=1.0)))
    x = clock(steps=250)
    result = nir_fidelity(network, params, x, reader="snntorch", dtype=torch.float32, literal=False)
    exact = result["as_exported"]
    print(f"snntorch (metadata reset, float32, {scaling} scaling):", exact)
    # float32 summation order differs between the two simulators: exactness needs a margin to the threshold
    assert exact["min_margin_to_threshold"] > 1e-5
    assert exact["spikes_ours"] > 100
    assert exact["identical"], exact


def test_a_reader_that_resets_to_v_reset_disagrees_and_the_loss_is_reported():
    network, params = small_network(n_ref=0)
    result = nir_fidelity(network, params, clock(steps=250), reader="spyx", literal=True)
    literal = result["nir_literal"]
    print("snntorch, NIR-literal reset to zero:", literal)
    assert result["semantics_matched"]["identical"]
    assert 0.5 < literal["spike_agreement"] < 1.0 and literal["first_divergence_step"] is not None
    assert literal["spike_recall"] < 1.0


def test_refractoriness_is_lost_and_measured():
    network, params = small_network(n_ref=3)
    result = nir_fidelity(network, params, clock(steps=250), reader="spyx", literal=False)
    print("spyx, n_ref = 3:", result["as_exported"])
    lost = result["as_exported"]
    assert lost["n_ref"] == 3 and 0.0 < lost["spike_agreement"] < 1.0  # the test is sensitive to the loss
    assert lost["spikes_nir"] > lost["spikes_ours"]  # without refractoriness the neurons fire more
    assert result["semantics_matched"]["identical"] and result["semantics_matched"]["n_ref"] == 0
    assert any("refractory" in item for item in result["lost"])


def test_the_time_unit_is_free():
    """A graph written with one step = 1 time unit (dt_s = 1) runs the same in both readers."""
    network, params = small_network(n_ref=0)
    x = clock(steps=200)
    graph = network_to_nir(network, params, dt_s=1.0)
    assert graph.metadata["dt_s"] == 1.0
    np.testing.assert_allclose(1 - 1.0 / graph.nodes["lif"].tau, network.cell.spec.alpha, rtol=1e-14)
    with torch.no_grad():
        trajectory, _ = network.run({k: v.double() for k, v in params.items()}, x.double())
    for reader, dtype in (("spyx", torch.float64), ("snntorch", torch.float32)):
        run = simulate_nir(graph, x.to(dtype), reader=reader, reset="metadata", dtype=dtype)
        assert compare_spikes(trajectory.outputs, run.spikes)["identical"], reader
    with pytest.raises(ConfigError, match="nir.dt_s"):
        network_to_nir(network, params, dt_s=0.0)


def test_spyx_refuses_an_input_gain_it_would_ignore():
    network, params = small_network(n_ref=0, input_scaling="old")
    graph = network_to_nir(network, params)
    with pytest.raises(ConfigError, match="spyx ignores LIF.r"):
        simulate_nir(graph, clock(steps=5).double(), reader="spyx")


def test_error_module_graph_reproduces_the_learning_signals():
    module, params = small_module(n_ref=0)
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(2, 220, module.input_width, generator=g) < 0.1).float()
    result = nir_fidelity(module, params, x, reader="spyx", literal=False)
    exact = result["as_exported"]
    print("error module, spyx, n_ref = 0:", exact)
    assert exact["spikes_ours"] > 100 and exact["identical"]
    assert exact["output_rel_max_diff"] <= 1e-12
    module3, _ = small_module(n_ref=3)
    lost = nir_fidelity(module3, params, x, reader="spyx", literal=False)["as_exported"]
    print("error module, spyx, n_ref = 3:", lost)
    assert lost["spike_agreement"] < 1.0


# ------------------------------------------------------------------------------------------ trained model


@pytest.mark.skipif(not (TRAINED / "config.yaml").exists(), reason="trained example not in this checkout")
def test_trained_arm_model_exports_and_its_agreement_is_reported(tmp_path, monkeypatch):
    from eprop_l2l.error_modules.base import Observation
    from eprop_l2l.runs.evaluation import evaluation_setup

    monkeypatch.chdir(REPO)
    cfg, learner, family, meta, *_ = evaluation_setup(str(TRAINED.relative_to(REPO)))
    batch = family.sample(1, torch.Generator().manual_seed(cfg.eval.seed))  # a held-out movement
    with torch.no_grad():
        fast, demos = learner.adapt(meta, batch)
    with pytest.warns(NIRLossWarning):
        paths = export_learner_nir(learner, {**meta, "network": fast}, tmp_path, task=0)
    assert set(paths) == {"network", "error_module"}
    graph = read_nir(paths["network"])
    assert np.array_equal(graph.nodes["w_rec"].weight, fast["w_rec"][0].numpy())
    assert graph.nodes["lif"].metadata["n_ref"] == cfg.model.n_ref

    net = nir_fidelity(learner.network, fast, batch.inputs, task=0)
    obs = Observation(spikes=demos[0].trajectory.outputs, inputs=batch.inputs, context=batch.context)
    em = nir_fidelity(learner.error_module, meta["error_module"], learner.error_module.module_input(obs),
                      literal=False)
    for name, result in (("learning network", net), ("error module", em)):
        for entry in ("as_exported", "semantics_matched", "nir_literal"):
            if entry in result:
                r = result[entry]
                print(f"{name:16s} {entry:17s} agreement {r['spike_agreement']:.5f} first divergence "
                      f"{r['first_divergence_step']} spikes ours/NIR {r['spikes_ours']}/{r['spikes_nir']} "
                      f"recall {r['spike_recall']:.3f} precision {r['spike_precision']:.3f} "
                      f"output corr {r['output_corr']:.4f} rel max diff {r['output_rel_max_diff']:.3g}")
    for result in (net, em):
        matched = result["semantics_matched"]
        assert matched["spike_agreement"] >= 0.999 and matched["output_corr"] >= 0.999
        assert 0.5 < result["as_exported"]["spike_agreement"] < 1.0  # refractoriness (n_ref = 5) is lost
    assert net["nir_literal"]["spike_agreement"] < 1.0
    assert math.isfinite(net["as_exported"]["output_corr"])


# ------------------------------------------------------------------------------------ current-based LIF


def cuba_network(n_ref: int = 0, scaling: str = "new"):
    """A random current-based LIF network (float32 weights) firing at about a quarter of the steps with the
    :func:`clock` input; no membrane comes within 1e-4 of the threshold."""
    cell = CubaLIF(n_in=6, n_rec=30, v_th=0.4, n_ref=n_ref, tau_syn=5.0, input_scaling=scaling, dt_ms=1.0)
    network = RecurrentNetwork(cell, LeakyReadout(30, 2, dt_ms=1.0))
    g = torch.Generator().manual_seed(1)
    params = network.init_params(g, torch.float32)
    params["w_in"] = params["w_in"] * (0.3 if scaling == "new" else 6.0)
    params["w_rec"] = params["w_rec"] * 0.2
    params["b_out"] = 0.1 * torch.randn(2, generator=g)
    return network, params


@pytest.mark.parametrize("integrator", ["euler", "exp"])
@pytest.mark.parametrize("scaling", ["new", "old"])
def test_a_current_based_cell_is_a_cubalif_node_whose_constants_are_ours(integrator, scaling, tmp_path):
    network, params = cuba_network(scaling=scaling)
    cell = network.cell
    graph = network_to_nir(network, params, integrator=integrator)
    node = graph.nodes["lif"]
    assert isinstance(node, nir.CubaLIF) and ("lif", "w_rec") in graph.edges and ("w_rec", "lif") in graph.edges
    dt = graph.metadata["dt_s"]
    decay = (lambda tau: 1 - dt / tau) if integrator == "euler" else (lambda tau: np.exp(-dt / tau))
    np.testing.assert_allclose(decay(node.tau_syn), cell.spec.alpha_syn, rtol=1e-14)
    np.testing.assert_allclose(decay(node.tau_mem), cell.spec.alpha, rtol=1e-14)
    np.testing.assert_allclose(node.w_in * dt / node.tau_syn, cell.spec.input_scale, rtol=1e-14)  # input → I
    np.testing.assert_allclose(node.r * dt / node.tau_mem, 1.0, rtol=1e-14)  # I → v, unit gain
    assert np.all(node.v_threshold == 0.4) and np.all(node.v_reset == 0) and np.all(node.v_leak == 0)
    assert node.metadata["tau_syn_ms"] == 5.0 and node.metadata["alpha_syn"] == cell.spec.alpha_syn
    back = read_nir(write_nir(tmp_path / "cuba.nir", graph))
    assert_graphs_equal(graph, back)
    assert cell_from_spec(NeuronSpec.from_dict(json.loads(back.nodes["lif"].metadata["neuron_spec"])), 6) == cell


def test_snntorch_reproduces_a_current_based_network_exactly():
    network, params = cuba_network()
    result = nir_fidelity(network, params, clock(steps=250), reader="snntorch", dtype=torch.float32, literal=True)
    exact = result["as_exported"]
    print("snntorch Synaptic (metadata reset, float32), CubaLIF:", exact)
    assert 0.1 < exact["spikes_ours"] / (exact["trials"] * exact["steps"] * exact["neurons"]) < 0.4
    assert exact["min_margin_to_threshold"] > 1e-4  # float32 summation order: exactness needs a margin
    assert exact["identical"] and exact["first_divergence_step"] is None
    assert exact["output_rel_max_diff"] <= 1e-5  # the readout from the same spikes, to float32 rounding
    literal = result["nir_literal"]  # a reader that resets to v_reset, as NIR's CubaLIF says
    assert 0.5 < literal["spike_agreement"] < 1.0


def test_a_wrong_cubalif_graph_is_not_reproduced_and_spyx_is_refused():
    network, params = cuba_network()
    x = clock(steps=250)
    graph = network_to_nir(network, params)
    graph.nodes["lif"].tau_syn = graph.nodes["lif"].tau_syn * 1.2
    run = simulate_nir(graph, x, reader="snntorch", reset="metadata", dtype=torch.float32)
    with torch.no_grad():
        trajectory, _ = network.run(params, x)
    assert not compare_spikes(trajectory.outputs, run.spikes)["identical"]
    with pytest.raises(ConfigError) as err:
        simulate_nir(graph, x.double(), reader="spyx")
    assert "spyx's RCuBaLIF subtracts the threshold before the membrane decays" in one_line(err)
    with pytest.warns(NIRLossWarning, match="CubaLIF node's metadata"):
        network_to_nir(cuba_network(n_ref=2)[0], params)
