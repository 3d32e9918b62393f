"""NIR export of the learning network and of the learned error module, and a measure of what a NIR reader
reproduces of them.

Graphs (one per network; node names are fixed, so that tools can find the pieces)::

    learning network:  input → w_in (Linear) → lif (LIF|CubaLIF) ⇄ w_rec (Linear);  lif → w_out (Linear|Affine)
                       → readout (LI) → output
    error module:      input → em_w_in (Linear) → em_lif (LIF) ⇄ em_w_rec (Linear);  em_lif → em_filter (LI)
                       → em_proj (Linear) → output

Time constants are converted so that a reader which steps the NIR ODE ``τ dv/dt = (v_leak − v) + R·I`` with the
graph's step ``dt`` reproduces our per-step decay and input gain exactly (``integrator="euler"``, the default:
``v ← (1 − dt/τ) v + (dt/τ) R I``, which is what spyx and snnTorch do), or so that a reader which decays
exactly (``v ← e^{−dt/τ} v + (dt/τ) R I``) does (``integrator="exp"``)::

    euler:  τ = dt / (1 − α)        exp:  τ = −dt / ln α        both:  R = s · τ / dt,  v_leak = 0

(α → κ for the readout and ``module.decay`` for the error module's filter; ``s`` is the input scale of the
spec). A current-based cell (``cuba_lif``) is NIR's ``CubaLIF``: τ_syn from α_s the same way, ``w_in = s·τ_syn/dt``
on the synaptic current and ``r = τ_mem/dt`` (unit gain from the current to the membrane). The input current of
a LIF node is the sum of its incoming edges, the recurrent edge carrying the previous step's spikes.
``v_threshold = v_th``, ``v_reset = 0``. Every constant is read from ``cell.spec`` / ``readout.spec`` /
``module.decay``; nothing is re-derived from τ_m.

What NIR cannot express, and what this module does about it:

* the reset by subtraction of v_th one step after the spike (NIR's LIF resets to ``v_reset``; in continuous
  time the two coincide, in discrete time they do not): carried in the LIF node's metadata (``reset``);
* the refractory counter (``n_ref`` > 0): carried in metadata; export warns (:class:`NIRLossWarning`), or
  refuses with ``strict=True``;
* surrogate gradient, γ_pd, the full :class:`NeuronSpec` (as JSON, for :func:`cell_from_spec`): metadata;
* ALIF threshold adaptation, LSTM units and rate (tanh) units: refused with a one-line :class:`ConfigError`.

:func:`simulate_nir` runs a graph written here with a third-party reader (spyx, or snnTorch's node converter
through nirtorch's graph interpreter) and :func:`nir_fidelity` compares the result with our own simulation.
See ``docs/nir.md`` for the mapping table and the measured agreement.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import io
import json
import math
import tempfile
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from ..cells.base import Params, check_params
from ..cells.spec import REFRACTORY, RESET, CurrentSpec, NeuronSpec
from ..errors import ConfigError, require_choice
from ..meta.params import ERROR_MODULE, NETWORK
from ..units import step_seconds

INTEGRATORS = ("euler", "exp")
READERS = ("spyx", "snntorch")
RESETS = ("reader", "metadata")
SNNTORCH_DT_S = 1e-4  # snnTorch 1.0's NIR node converter assumes this step (seconds), whatever the graph says


class NIRLossWarning(UserWarning):
    """A property of our dynamics that the NIR graph carries only in metadata (a plain NIR reader drops it)."""


def _nir():
    try:
        import nir
    except ImportError:
        raise ConfigError("nir", "the NIR export needs the 'nir' package: pip install -e '.[nir]'") from None
    return nir


# --------------------------------------------------------------------------------------------------- export


def _cell_spec(cell, what: str) -> NeuronSpec:
    """The cell's spec if NIR can express the cell, else a one-line ConfigError naming the construct."""
    name = type(cell).__name__
    spec = getattr(cell, "spec", None)
    if not isinstance(spec, NeuronSpec):
        if name == "LSTM":
            problem = "LSTM units (gates and cell state) have no NIR primitive; export refused"
        elif name == "RateRNN":
            problem = "rate units (tanh non-linearity) have no NIR primitive; export refused"
        else:
            problem = f"{name} cells have no NIR primitive; export refused"
        raise ConfigError(f"{what}.cell", problem)
    if spec.model == "alif" and spec.n_adaptive > 0 and spec.beta != 0.0:
        raise ConfigError(f"{what}.cell", f"ALIF threshold adaptation (beta={spec.beta}, tau_a={spec.tau_a_ms} ms, "
                                          f"{spec.n_adaptive} adaptive neurons) has no NIR primitive; export refused")
    if spec.reset != RESET or spec.refractory != REFRACTORY:
        raise ConfigError(f"{what}.cell", f"unknown reset/refractory convention {spec.reset!r}/{spec.refractory!r}")
    return spec


def _dt_seconds(dt_ms: float, dt_s: float | None) -> float:
    if dt_s is None:
        return step_seconds(dt_ms)
    if isinstance(dt_s, bool) or not isinstance(dt_s, (int, float)) or not math.isfinite(dt_s) or dt_s <= 0:
        raise ConfigError("nir.dt_s", f"must be a number > 0, got {dt_s!r}")
    return float(dt_s)


def _tau(decay: float, dt_s: float, integrator: str) -> float:
    """The NIR time constant whose discretisation with step dt_s decays by ``decay`` per step."""
    if not 0.0 < decay < 1.0:
        raise ConfigError("nir.decay", f"a per-step decay must lie in (0, 1), got {decay!r}")
    return dt_s / (1.0 - decay) if integrator == "euler" else -dt_s / math.log(decay)


def _array(tensor: torch.Tensor, key: str, task: int | None, dims: int) -> np.ndarray:
    """One tensor of the parameter mapping as a numpy array (its own dtype), the task's slice if per-task."""
    if tensor.dim() == dims + 1:
        if task is None:
            raise ConfigError(f"params.{key}", f"has a task dimension {tuple(tensor.shape)}: pass task=<index>")
        if not -tensor.shape[0] <= task < tensor.shape[0]:
            raise ConfigError("nir.task", f"must index one of {tensor.shape[0]} tasks, got {task}")
        tensor = tensor[task]
    elif tensor.dim() != dims:
        raise ConfigError(f"params.{key}", f"expected {dims} dimensions, got shape {tuple(tensor.shape)}")
    return tensor.detach().cpu().numpy().copy()


def _lif_node(spec: NeuronSpec, integrator: str, dt_s: float, strict: bool, what: str):
    """The population's node: ``LIF``, or ``CubaLIF`` for a current-based cell (its synaptic current is NIR's
    ``I``: ``w_in·dt/τ_syn = s`` and ``r·dt/τ_mem = 1``, the membrane adds the current with unit gain)."""
    nir = _nir()
    lost = ["reset by subtraction of v_th one step after the spike"]
    if spec.n_ref > 0:
        message = (f"{what}: refractoriness ({spec.n_ref} steps) has no NIR primitive; "
                   f"it is carried in the {_node_kind(spec)} node's metadata only")
        if strict:
            raise ConfigError(f"{what}.n_ref", f"refractoriness ({spec.n_ref} steps) has no NIR primitive; "
                                               "export refused (strict)")
        warnings.warn(message, NIRLossWarning, stacklevel=3)
        lost.append(f"refractory counter ({spec.n_ref} steps)")
    n = spec.n
    tau = _tau(spec.alpha, dt_s, integrator)
    metadata = {
        "eprop_model": spec.model, "dt_ms": spec.dt_ms, "dt_s": dt_s, "integrator": integrator,
        "alpha": spec.alpha, "tau_m_ms": spec.tau_m_ms, "input_scale": spec.input_scale, "v_th": spec.v_th,
        "reset": spec.reset, "refractory": spec.refractory, "n_ref": spec.n_ref,
        "surrogate": spec.surrogate, "gamma_pd": spec.gamma_pd,
        "nir_cannot_express": "; ".join(lost), "neuron_spec": json.dumps(spec.to_dict(), sort_keys=True),
    }
    common = dict(v_leak=np.zeros(n), v_threshold=np.full(n, float(spec.v_th)), v_reset=np.zeros(n))
    if isinstance(spec, CurrentSpec):
        tau_syn = _tau(spec.alpha_syn, dt_s, integrator)
        metadata.update(alpha_syn=spec.alpha_syn, tau_syn_ms=spec.tau_syn_ms)
        return nir.CubaLIF(tau_syn=np.full(n, tau_syn), tau_mem=np.full(n, tau), r=np.full(n, tau / dt_s),
                           w_in=np.full(n, spec.input_scale * tau_syn / dt_s), **common, metadata=metadata)
    return nir.LIF(tau=np.full(n, tau), r=np.full(n, spec.input_scale * tau / dt_s), **common, metadata=metadata)


def _node_kind(spec: NeuronSpec) -> str:
    return "CubaLIF" if isinstance(spec, CurrentSpec) else "LIF"


def _li_node(decay: float, input_scale: float, n: int, integrator: str, dt_s: float, metadata: dict):
    nir = _nir()
    tau = _tau(decay, dt_s, integrator)
    return nir.LI(tau=np.full(n, tau), r=np.full(n, input_scale * tau / dt_s), v_leak=np.zeros(n),
                  metadata={"decay": decay, "input_scale": input_scale, "integrator": integrator, "dt_s": dt_s,
                            **metadata})


def _graph_metadata(role: str, dt_ms: float, dt_s: float, integrator: str, **extra) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    try:
        producer = f"eprop_l2l {version('eprop_l2l')}"
    except PackageNotFoundError:
        producer = "eprop_l2l"
    return {"producer": producer, "role": role, "dt_ms": dt_ms, "dt_s": dt_s, "time_unit": "s",
            "integrator": integrator, "recurrent_edge_delay_steps": 1, **extra}


def network_to_nir(network, params: Params, *, task: int | None = None, integrator: str = "euler",
                   dt_s: float | None = None, strict: bool = False):
    """NIR graph of a learning network (cell + leaky readout) with parameters ``params``.

    ``params`` is the network's own tree (the ``network`` population of the meta-parameters): ``w_in [n_rec,
    n_in]``, ``w_rec [n_rec, n_rec]``, ``w_out [n_out, n_rec]`` (+ ``b_out``). Per-task fast weights (a leading
    task dimension) need ``task``.
    ``dt_s``: the step in the graph's time unit (seconds), default ``spec.dt_ms / 1000``.
    """
    nir = _nir()
    require_choice("nir.integrator", integrator, INTEGRATORS)
    spec = _cell_spec(network.cell, "network")
    readout = network.readout.spec
    if readout.n_in != spec.n:
        raise ConfigError("network.readout.n_in", f"must equal the cell's n_rec={spec.n}, got {readout.n_in}")
    if not math.isclose(readout.dt_ms, spec.dt_ms):
        raise ConfigError("network.readout.dt_ms", f"readout step {readout.dt_ms} ms differs from the cell's "
                                                f"{spec.dt_ms} ms")
    check_params(network.cell, params)
    dt = _dt_seconds(spec.dt_ms, dt_s)
    w_in = _array(params["w_in"], "w_in", task, 2)
    w_rec = _array(params["w_rec"], "w_rec", task, 2)
    w_out = _array(params["w_out"], "w_out", task, 2)
    if w_out.shape != (readout.n_out, spec.n):
        raise ConfigError("params.w_out", f"expected shape {(readout.n_out, spec.n)}, got {w_out.shape}")
    if readout.bias:
        if "b_out" not in params:
            raise ConfigError("params.b_out", "missing (the readout has a bias)")
        bias = _array(params["b_out"], "b_out", task, 1) / np.asarray(readout.input_scale, dtype=w_out.dtype)
        out_node = nir.Affine(weight=w_out, bias=bias)
    else:
        out_node = nir.Linear(weight=w_out)
    nodes = {
        "input": nir.Input(input_type=np.array([network.cell.n_in])),
        "w_in": nir.Linear(weight=w_in),
        "lif": _lif_node(spec, integrator, dt, strict, "network"),
        "w_rec": nir.Linear(weight=w_rec),
        "w_out": out_node,
        "readout": _li_node(readout.kappa, readout.input_scale, readout.n_out, integrator, dt,
                            {"kappa": readout.kappa, "tau_out_ms": readout.tau_out_ms,
                             "readout_spec": json.dumps(readout.to_dict(), sort_keys=True)}),
        "output": nir.Output(output_type=np.array([readout.n_out])),
    }
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "w_out"),
             ("w_out", "readout"), ("readout", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata=_graph_metadata("learning_network", spec.dt_ms, dt, integrator, task=-1
                                                 if task is None else int(task)))


def error_module_to_nir(module, params: Params, *, integrator: str = "euler", dt_s: float | None = None,
                        strict: bool = False):
    """NIR graph of a learned error module: its recurrent cell, the filter F_decay on its spikes and the
    projection Ψ to one learning signal per learning-network neuron (the graph's nodes keep the file names
    ``em_w_in``, ``em_lif``, ``em_w_rec``, ``em_filter``, ``em_proj``). ``params`` is the module's own tree
    (``{"cell": ..., "proj": Ψ}``: the ``error_module`` population of the meta-parameters).

    The graph has one input, the concatenation the module sees (its layout is in the graph's metadata:
    ``input_layout``)."""
    nir = _nir()
    require_choice("nir.integrator", integrator, INTEGRATORS)
    if not hasattr(module, "cell_params") or not hasattr(module, "decay"):
        raise ConfigError("error_module", f"{type(module).__name__} has no network to export (only the learned "
                                          "error module has one)")
    spec = _cell_spec(module.cell, "error_module")
    cell_params = module.cell_params(params)
    check_params(module.cell, cell_params)
    if "proj" not in params:
        raise ConfigError("params.proj", "missing")
    proj = _array(params["proj"], "proj", None, 2)
    if proj.shape != (module.n_learner, spec.n):
        raise ConfigError("params.proj", f"expected shape {(module.n_learner, spec.n)}, got {proj.shape}")
    dt = _dt_seconds(spec.dt_ms, dt_s)
    layout, start = [], 0
    for name, width, used in (("context", module.n_context, module.use_context),
                              ("learner_spikes", module.n_learner, module.use_spikes),
                              ("learner_inputs", module.n_inputs, module.use_inputs)):
        if used and width:
            layout.append(f"{name}[{start}:{start + width}]")
            start += width
    nodes = {
        "input": nir.Input(input_type=np.array([module.input_width])),
        "em_w_in": nir.Linear(weight=_array(cell_params["w_in"], "em_w_in", None, 2)),
        "em_lif": _lif_node(spec, integrator, dt, strict, "error_module"),
        "em_w_rec": nir.Linear(weight=_array(cell_params["w_rec"], "em_w_rec", None, 2)),
        "em_filter": _li_node(module.decay, 1.0, spec.n, integrator, dt,
                              {"signal_tau_ms": module.signal_tau, "filter_dt_ms": module.dt_ms}),
        "em_proj": nir.Linear(weight=proj),
        "output": nir.Output(output_type=np.array([module.n_learner])),
    }
    edges = [("input", "em_w_in"), ("em_w_in", "em_lif"), ("em_lif", "em_w_rec"), ("em_w_rec", "em_lif"),
             ("em_lif", "em_filter"), ("em_filter", "em_proj"), ("em_proj", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges,
                        metadata=_graph_metadata("error_module", spec.dt_ms, dt, integrator,
                                                 input_layout=", ".join(layout)))


def learner_to_nir(learner, params: Params, *, task: int | None = None, integrator: str = "euler",
                   dt_s: float | None = None, strict: bool = False) -> dict:
    """``{"network": graph, "error_module": graph}`` of a meta-learner (the error module only if it is a learned
    one). ``params``: the meta-parameter tree, its ``network`` population per task with ``task``."""
    graphs = {"network": network_to_nir(learner.network, params[NETWORK], task=task, integrator=integrator,
                                        dt_s=dt_s, strict=strict)}
    if hasattr(learner.error_module, "cell_params"):
        graphs["error_module"] = error_module_to_nir(learner.error_module, params[ERROR_MODULE],
                                                     integrator=integrator, dt_s=dt_s, strict=strict)
    return graphs


def write_nir(path: str | Path, graph) -> Path:
    """``nir.write`` to ``path`` (parent folders created); returns the path."""
    nir = _nir()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nir.write(path, graph)
    return path


def read_nir(path: str | Path):
    """``nir.read`` of a file written by :func:`write_nir`."""
    return _nir().read(Path(path))


def export_learner_nir(learner, params: Params, out_dir: str | Path, *, task: int | None = None,
                       integrator: str = "euler", dt_s: float | None = None, strict: bool = False) -> dict:
    """Write ``network.nir`` (and ``error_module.nir``) into ``out_dir``; returns ``{name: path}``."""
    graphs = learner_to_nir(learner, params, task=task, integrator=integrator, dt_s=dt_s, strict=strict)
    return {name: write_nir(Path(out_dir) / f"{name}.nir", graph) for name, graph in graphs.items()}


# ------------------------------------------------------------------------------------------------ simulation


class NIRRun(NamedTuple):
    """What a reader made of a graph on an input ``[B, T, n_in]``."""

    spikes: torch.Tensor  # [B, T, n] spikes of the LIF population
    membrane: torch.Tensor | None  # [B, T, n] membrane after each step (None if the reader does not expose it)
    output: torch.Tensor | None  # [B, T, n_out] the graph's output (readout y, or learning signals L)
    reader: str


class _Layout(NamedTuple):
    lif: str
    w_in: str
    w_rec: str
    post: list  # node names after the LIF, in order, up to (not including) the Output


def _layout(graph) -> _Layout:
    """The pieces of a graph written by this module (one LIF ⇄ Linear loop, fed by Input → Linear)."""
    nir = _nir()
    lifs = [k for k, node in graph.nodes.items() if isinstance(node, nir.LIF | nir.CubaLIF)]
    if len(lifs) != 1:
        raise ConfigError("nir.graph", f"expected one LIF population, found {len(lifs)}")
    lif = lifs[0]
    into = [a for a, b in graph.edges if b == lif]
    out_of = [b for a, b in graph.edges if a == lif]
    rec = [k for k in into if k in out_of and isinstance(graph.nodes[k], nir.Linear)]
    feed = [k for k in into if k not in rec]
    if len(rec) != 1 or len(feed) != 1 or not isinstance(graph.nodes[feed[0]], nir.Linear):
        raise ConfigError("nir.graph", f"expected input → Linear → {lif} ⇄ Linear, found inputs {into}")
    sources = [a for a, b in graph.edges if b == feed[0]]
    if len(sources) != 1 or not isinstance(graph.nodes[sources[0]], nir.Input):
        raise ConfigError("nir.graph", f"{feed[0]} must be fed by the graph's Input node")
    post, current = [], [k for k in out_of if k != rec[0]]
    while current:
        if len(current) != 1:
            raise ConfigError("nir.graph", f"expected a chain after {lif}, found branches {current}")
        name = current[0]
        if isinstance(graph.nodes[name], nir.Output):
            break
        post.append(name)
        current = [b for a, b in graph.edges if a == name]
    return _Layout(lif, feed[0], rec[0], post)


def _core_graph(graph, layout: _Layout):
    """Input → Linear → LIF ⇄ Linear → Output: the spiking part, as the readers take it (fresh copies)."""
    nir = _nir()
    lif = copy.deepcopy(graph.nodes[layout.lif])
    n = int(lif.v_threshold.shape[0])
    w_in = copy.deepcopy(graph.nodes[layout.w_in])
    nodes = {"input": nir.Input(input_type=np.array([w_in.weight.shape[1]])), "w_in": w_in, "lif": lif,
             "w_rec": copy.deepcopy(graph.nodes[layout.w_rec]), "output": nir.Output(output_type=np.array([n]))}
    edges = [("input", "w_in"), ("w_in", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    return nir.NIRGraph(nodes=nodes, edges=edges, metadata=dict(graph.metadata))


def _graph_dt(graph) -> float:
    dt = graph.metadata.get("dt_s") if isinstance(graph.metadata, dict) else None
    if dt is None:
        raise ConfigError("nir.graph.metadata.dt_s", "missing: the graph does not say which step it was written for")
    return float(dt)


def _run_spyx(core, x: torch.Tensor, dt: float, dtype: torch.dtype):
    """spyx 1.0's public ``from_nir``: its RLIF computes v^t = β v^{t-1} + I^t + W_rec z^{t-1} − θ z^{t-1} with
    z^{t-1} = H(v^{t-1} − θ) and emits z^{t-1} at step t (one step late), β = 1 − dt/τ; it ignores ``r``."""
    try:
        import jax
        import jax.numpy as jnp
        import spyx.nir as spyx_nir
    except ImportError:
        raise ConfigError("nir.reader", "spyx is not installed: pip install spyx") from None
    lif = core.nodes["lif"]
    if isinstance(lif, _nir().CubaLIF):
        raise ConfigError("nir.reader", "spyx's RCuBaLIF subtracts the threshold before the membrane decays "
                                        "(v ← β(v − θz) + I): other dynamics than our CubaLIF; use reader=snntorch")
    gain = lif.r * dt / lif.tau
    if not np.allclose(gain, 1.0, rtol=1e-12, atol=0.0):
        raise ConfigError("nir.reader", f"spyx ignores LIF.r and needs a per-step input gain r·dt/τ of 1, the graph "
                                        f"has {float(np.max(np.abs(gain))):.6g}")
    weight = core.nodes["w_in"].weight
    if not np.array_equal(weight.astype(np.float32).astype(weight.dtype), weight):
        warnings.warn("spyx keeps input weights in float32: the graph's w_in is rounded", NIRLossWarning, stacklevel=3)
    core.nodes["w_in"].weight = weight.astype(np.float32)  # spyx's nnx.Linear holds float32 parameters
    np_dtype = np.float64 if dtype == torch.float64 else np.float32
    steps = x.shape[1]
    frames = x.detach().cpu().numpy().astype(np_dtype).transpose(1, 0, 2)
    frames = np.concatenate([frames, np.zeros_like(frames[:1])], 0)  # one more step: spyx emits z^{t-1} at t
    with jax.enable_x64(dtype == torch.float64), contextlib.redirect_stdout(io.StringIO()):
        _, (out, states) = spyx_nir.from_nir(core, jnp.asarray(frames), dt=dt, return_all_states=True)
        out = np.asarray(out)
        leaves = [np.asarray(s) for s in jax.tree_util.tree_leaves(states)]
    spikes = torch.from_numpy(out[1:].transpose(1, 0, 2).copy()).to(dtype)
    membranes = [s for s in leaves if s.shape == out.shape]
    membrane = torch.from_numpy(membranes[-1][:steps].transpose(1, 0, 2).copy()).to(dtype) if membranes else None
    return spikes, membrane


def _run_snntorch(core, x: torch.Tensor, dt: float, out_dtype: torch.dtype, reset: str):
    """snnTorch 1.0's NIR node converter (``LIF`` → ``snn.Leaky`` with β = 1 − 10⁻⁴/τ, ``CubaLIF`` →
    ``snn.Synaptic`` with α = 1 − 10⁻⁴/τ_syn as well; reset to zero at the spike, as NIR's neurons say) wired by
    nirtorch's graph interpreter (the recurrent edge carries the previous step).

    snnTorch's public ``import_from_nir`` is not used: with nirtorch 2.x it rewires a recurrent LIF so that the
    input passes through W_rec (its subgraph has the edge input → W_rec). Its converter assumes a step of 10⁻⁴ s,
    so the time constants are rescaled by 10⁻⁴/dt first (a change of time unit: r·dt/τ is unchanged).
    ``reset="metadata"`` switches the neurons to snnTorch's own subtract-the-threshold-one-step-later mode, as
    the LIF node's metadata declares. Runs in float32 (snnTorch's spike function emits float32)."""
    try:
        import nir
        import nirtorch
        import snntorch
        from snntorch.import_nir import _nir_to_snntorch_module
    except ImportError:
        raise ConfigError("nir.reader", "snntorch/nirtorch are not installed: pip install snntorch nirtorch") from None
    core = copy.deepcopy(core)
    dtype = torch.float32  # snnTorch's spike function emits float32 whatever the module's dtype
    lif = core.nodes["lif"]
    current_based = isinstance(lif, nir.CubaLIF)
    for name in ("tau_syn", "tau_mem") if current_based else ("tau",):
        setattr(lif, name, getattr(lif, name) * (SNNTORCH_DT_S / dt))
    convert = lambda node: _nir_to_snntorch_module(node, init_hidden=True)  # noqa: E731
    with contextlib.redirect_stdout(io.StringIO()):
        module = nirtorch.nir_to_torch(core, {nir.LIF: convert, nir.CubaLIF: convert, nir.Linear: convert},
                                       dtype=dtype)
    neuron = module.get_submodule("lif")
    expected = snntorch.Synaptic if current_based else snntorch.Leaky
    if type(neuron) is not expected:
        raise ConfigError("nir.reader", f"snntorch converted the {type(lif).__name__} to {type(neuron).__name__}, "
                                        f"expected {expected.__name__}")
    if reset == "metadata":
        if core.nodes["lif"].metadata.get("reset") != RESET:
            raise ConfigError("nir.graph", "the LIF's metadata declares no reset convention this reader knows")
        neuron.reset_mechanism = "subtract"
        neuron.state_function = neuron._base_sub
        neuron.reset_delay = True
    xs = x.detach().to(dtype)
    spikes, membrane, state = [], [], None
    with torch.no_grad():
        for t in range(xs.shape[1]):
            z, state = module(xs[:, t], state)
            spikes.append(z)
            membrane.append(neuron.mem.clone())
    return torch.stack(spikes, 1).to(out_dtype), torch.stack(membrane, 1).to(out_dtype)


def _run_post(graph, names: list, z: torch.Tensor, dt: float, dtype: torch.dtype) -> torch.Tensor | None:
    """The feed-forward nodes after the LIF (Linear, Affine, LI), evaluated from the nodes' parameters; LI with
    forward Euler at the graph's step, like both readers' LIF: y ← (1 − dt/τ) y + (dt/τ)(v_leak + R u)."""
    nir = _nir()
    if not names:
        return None
    u = z.to(dtype)
    as_t = lambda a: torch.as_tensor(np.asarray(a), dtype=dtype)  # noqa: E731
    for name in names:
        node = graph.nodes[name]
        if isinstance(node, nir.Affine):
            u = u @ as_t(node.weight).T + as_t(node.bias)
        elif isinstance(node, nir.Linear):
            u = u @ as_t(node.weight).T
        elif isinstance(node, nir.LI):
            step = dt / as_t(node.tau)
            decay, gain, leak = 1.0 - step, step * as_t(node.r), step * as_t(node.v_leak)
            y, ys = torch.zeros_like(u[:, 0]), []
            for t in range(u.shape[1]):
                y = decay * y + gain * u[:, t] + leak
                ys.append(y)
            u = torch.stack(ys, 1)
        else:
            raise ConfigError("nir.graph", f"node {name} ({type(node).__name__}) after the LIF is not simulated here")
    return u


def simulate_nir(graph, x: torch.Tensor, *, reader: str = "spyx", reset: str = "reader",
                 dtype: torch.dtype = torch.float64) -> NIRRun:
    """Run a graph written by this module on ``x [B, T, n_in]`` with a third-party NIR reader.

    reader ``"spyx"`` (spyx 1.0 ``spyx.nir.from_nir``, JAX; float64 when ``dtype`` is float64): its recurrent
    LIF subtracts the threshold one step after the spike, as we do. Reader ``"snntorch"`` (snnTorch 1.0's node
    converter through ``nirtorch.nir_to_torch``): resets to zero at the spike, as NIR's LIF says, unless
    ``reset="metadata"``. Neither reader imports ``LI`` readouts, so the nodes after the LIF (readout, filter,
    projection) are evaluated here from their parameters with the same forward-Euler rule.
    """
    require_choice("nir.reader", reader, READERS)
    require_choice("nir.reset", reset, RESETS)
    if dtype not in (torch.float32, torch.float64):
        raise ConfigError("nir.dtype", f"must be torch.float32 or torch.float64, got {dtype}")
    layout = _layout(graph)
    dt = _graph_dt(graph)
    core = _core_graph(graph, layout)
    if x.dim() != 3 or x.shape[-1] != core.nodes["w_in"].weight.shape[1]:
        raise ConfigError("inputs", f"expected [B, T, {core.nodes['w_in'].weight.shape[1]}], got {tuple(x.shape)}")
    if reader == "spyx":
        spikes, membrane = _run_spyx(core, x, dt, dtype)
        name = "spyx " + _version("spyx")
    else:
        spikes, membrane = _run_snntorch(core, x, dt, dtype, reset)
        name = f"snntorch {_version('snntorch')} + nirtorch {_version('nirtorch')} (reset: " + (
            "subtract one step late, from metadata)" if reset == "metadata" else "to zero, NIR LIF)")
    return NIRRun(spikes, membrane, _run_post(graph, layout.post, spikes, dt, dtype), name)


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "?"


# -------------------------------------------------------------------------------------------------- fidelity


def compare_spikes(ours: torch.Tensor, theirs: torch.Tensor, out_ours: torch.Tensor | None = None,
                   out_theirs: torch.Tensor | None = None) -> dict:
    """Agreement of two spike trains ``[B, T, n]`` (and of two outputs ``[B, T, m]``), as plain numbers.

    spike_agreement: fraction of (trial, step, neuron) entries that are equal; first_divergence_step: the first
    step at which any entry differs (None: identical); recall/precision: fraction of our spikes the reader
    reproduces at the same step and neuron / of the reader's spikes that are ours."""
    if ours.shape != theirs.shape:
        raise ConfigError("nir.compare", f"spike shapes differ: {tuple(ours.shape)} vs {tuple(theirs.shape)}")
    a, b = ours.detach().cpu() > 0.5, theirs.detach().cpu() > 0.5
    equal = a == b
    steps = (~equal).any(2).any(0).nonzero()
    both = int((a & b).sum())
    result = {
        "identical": bool(equal.all()),
        "spike_agreement": float(equal.double().mean()),
        "first_divergence_step": int(steps[0, 0]) if steps.numel() else None,
        "spikes_ours": int(a.sum()), "spikes_nir": int(b.sum()),
        "spike_recall": both / max(int(a.sum()), 1), "spike_precision": both / max(int(b.sum()), 1),
        "steps": int(a.shape[1]), "neurons": int(a.shape[2]), "trials": int(a.shape[0]),
    }
    if out_ours is not None and out_theirs is not None:
        p, q = out_ours.detach().cpu().double(), out_theirs.detach().cpu().double()
        diff = float((p - q).abs().max())
        pc, qc = (p - p.mean()).flatten(), (q - q.mean()).flatten()
        norm = float(pc.norm() * qc.norm())
        result.update({
            "output_max_abs_diff": diff,
            "output_rel_max_diff": diff / max(float(p.abs().max()), 1e-300),
            "output_corr": 1.0 if diff == 0.0 else (max(-1.0, min(1.0, float(pc @ qc) / norm)) if norm > 0 else None),
        })
    return result


class _Ours(NamedTuple):
    spikes: torch.Tensor
    membrane: torch.Tensor
    output: torch.Tensor
    v_th: float


def _is_error_module(model) -> bool:
    return hasattr(model, "cell_params") and hasattr(model, "decay")


def _run_ours(model, params: Params, x: torch.Tensor) -> _Ours:
    with torch.no_grad():
        if _is_error_module(model):
            from ..error_modules.base import Observation

            parts, start = {}, 0
            for name, width, used in (("context", model.n_context, model.use_context),
                                      ("spikes", model.n_learner, model.use_spikes),
                                      ("inputs", model.n_inputs, model.use_inputs)):
                if used:
                    parts[name] = x[..., start:start + width]
                    start += width
            obs = Observation(spikes=parts.get("spikes"), inputs=parts.get("inputs"), context=parts.get("context"))
            output, trajectory = model.run(params, obs)
        else:
            trajectory, output = model.run(params, x)
    return _Ours(trajectory.outputs, trajectory.states.v, output, model.cell.spec.v_th)


def _without_refractoriness(model):
    if _is_error_module(model):
        return dataclasses.replace(model, cell=dataclasses.replace(model.cell, n_ref=0))
    return dataclasses.replace(model, cell=dataclasses.replace(model.cell, n_ref=0))


def _export(model, params: Params, integrator: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NIRLossWarning)
        if _is_error_module(model):
            return error_module_to_nir(model, params, integrator=integrator)
        return network_to_nir(model, params, integrator=integrator)


def _measure(model, params: Params, x: torch.Tensor, reader: str, reset: str, integrator: str, dtype,
             round_trip: bool) -> dict:
    ours = _run_ours(model, params, x)
    graph = _export(model, params, integrator)
    if round_trip:
        with tempfile.TemporaryDirectory() as folder:
            graph = read_nir(write_nir(Path(folder) / "graph.nir", graph))
    run = simulate_nir(graph, x, reader=reader, reset=reset, dtype=dtype)
    result = compare_spikes(ours.spikes, run.spikes, ours.output, run.output)
    result["reader"] = run.reader
    result["n_ref"] = int(model.cell.spec.n_ref)
    result["min_margin_to_threshold"] = float((ours.membrane - ours.v_th).abs().min())
    return result


def _task_params(params: Params, task: int | None, dtype: torch.dtype) -> Params:
    out = {}
    for key, value in params.items():
        if isinstance(value, dict):  # a sub-tree (the error module's cell)
            out[key] = _task_params(value, task, dtype)
            continue
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():
            continue
        base = 1 if key in ("b_out",) else (0 if value.dim() == 0 else 2)
        if value.dim() == base + 1 and base > 0:
            if task is None:
                raise ConfigError(f"params.{key}", f"has a task dimension {tuple(value.shape)}: pass task=<index>")
            value = value[task]
        out[key] = value.detach().to(device="cpu", dtype=dtype)
    return out


def nir_fidelity(model, params: Params, x: torch.Tensor, *, task: int | None = None, reader: str = "spyx",
                 integrator: str = "euler", dtype: torch.dtype = torch.float64, literal: bool = True,
                 round_trip: bool = True) -> dict:
    """How closely a NIR reader reproduces ``model`` (a RecurrentNetwork or a LearnedErrorModule) on ``x``.

    ``x``: the network's input ``[B, T, n_in]`` — for an error module, the concatenated module input
    ``[context, learner spikes, learner inputs]`` (as ``module.module_input`` builds it). Per-task parameters
    need ``task`` (and ``x`` should be that task's input). Parameters and input are cast to ``dtype``.

    Entries (each a :func:`compare_spikes` record, plus ``min_margin_to_threshold`` of our membranes):

    * ``as_exported``: the reader on the graph as exported (refractoriness, if any, is lost);
    * ``semantics_matched``: the same with ``n_ref = 0`` in both simulations (what NIR can express; should be
      identical where reader and graph agree on the integrator);
    * ``nir_literal`` (``literal=True``): snnTorch resetting to zero at the spike as NIR's LIF says, on the
      ``n_ref = 0`` twin — what the reset convention costs a reader that ignores the metadata.

    The graph is written to and read back from a temporary file first (``round_trip``), so the numbers are
    those of what ``nir.read`` returns.
    """
    require_choice("nir.reader", reader, READERS)
    require_choice("nir.integrator", integrator, INTEGRATORS)
    _cell_spec(model.cell, "error_module" if _is_error_module(model) else "network")
    params = _task_params(params, task, dtype)
    x = x.detach().to(device="cpu", dtype=dtype)
    matched = _without_refractoriness(model)
    result = {
        "reader": reader, "integrator": integrator, "dtype": str(dtype).replace("torch.", ""),
        "n_ref": int(model.cell.spec.n_ref),
        "as_exported": _measure(model, params, x, reader, "metadata", integrator, dtype, round_trip),
    }
    result["semantics_matched"] = (result["as_exported"] if model.cell.spec.n_ref == 0 else
                                   _measure(matched, params, x, reader, "metadata", integrator, dtype, round_trip))
    if literal:
        result["nir_literal"] = _measure(matched, params, x, "snntorch", "reader", integrator, dtype, round_trip)
    lost = ["reset by subtraction one step late (metadata: readers that reset to v_reset differ)"]
    if model.cell.spec.n_ref:
        lost.append(f"refractory counter, {model.cell.spec.n_ref} steps (metadata only)")
    result["lost"] = lost
    return result
