"""The learning network of one task in Lava: e-prop's one-shot update on the learning engine, then the test trial.

Processes (one network per task)::

    RingBuffer x ──▶ LearningDense W_in ──▶ EpropLearnerNeuron ──▶ s_out ──▶ LearningDense W_rec ──┐
                                                ▲    │ s_out_y2 (y2 = c·ψ·L), s_out_bap            │
    RingBuffer L ──▶ a_third_factor_in ─────────┘    └──▶ both LearningDense (s_in_y2, s_in_bap)   │
                                                ▲ a_in ◀──────────────────────────────────────────┘

Both connections carry a :class:`Loihi3FLearningRule` (``t_epoch = 1``):

* tag, every step: ``dt = S·u0·x1·y2 − S·I·x0·y2 − y0·t`` (the correction has x0 as its dependency: the
  float engine cannot evaluate x0 as a factor). Lava's trace ``x1`` at Lava step t+1 (our step
  t) already holds the presynaptic spike of that step (x^{t+1} for W_in, z^t for W_rec), one step later than
  e-prop pairs with ψ^t. Since ``x1 = α·x1_before + I·x0``, the difference ``x1 − I·x0`` is α times the
  trace e-prop wants; the neuron's y2 scale carries the 1/α.
* weights, once: the neuron sends ``bap = 1`` (and y2 = 0) at Lava step T+2 only, so ``dw = 2^k·y0·t`` moves
  the tag into the weights and ``−y0·t`` clears it in the same epoch. W_rec's rule multiplies by ``d``
  (tag_2, a per-synapse constant 128 off the diagonal and 0 on it) so that no self-connection is learned.

An ALIF learner (float only) adds its per-synapse ε_a in d (``tag_2``): ``dd = u0·x1·y3 − x0·y3 − u0·y1·d`` and
``− u0·y2·d`` in the tag, with y3 = β_j ψ/ρ_y and y1 = (1 − ρ + β_j ψ)/ρ_y from the neuron and d = α·β_j ε_a/s
(the engine updates w, d and t from their values before the step); W_rec's mask is then ``sgn(w)²`` of its zero
diagonal (``docs/hardware.md``).

Float (``floating_pt``): impulse I = 1, S = 1, y2 = −η·s·ψ·L/(α·ρ_y) with ρ_y = e^{−1/65535} the decay Lava
applies to the third-factor traces inside the epoch; the tag then equals −η Σ_t ψ_j L_j x̄_i.
Fixed (``fixed_pt``, Lava's bit-approximate learning engine): the export's integer formats — weight register
integers with one exponent per connection, trace impulse 2^i, product exponent p, update exponent k,
y2 = round(−y_scale·ψ·L/α) in y_bits. ``S·x1·y2`` is written ``4·2^(p+1)·x1·y2`` so that the engine's
right shift by 3 (two 7-bit factors) drops one bit instead of three.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import Dense, LearningDense
from lava.proc.io.source import RingBuffer

from .artefacts import Artefact, ArtefactError, fixed_module_format
from .procs.process import EpropLearnerNeuron, ModuleNeuron, OutputError, Readout, SignalFilter

RHO_Y = math.exp(-1.0 / 65535.0)  # Loihi3FLearningRule's forced y-trace tau (3F y values decay inside the epoch)
TAG_2_MASK = 128  # d on the off-diagonal synapses of W_rec: (t·d) >> 7 = t in the bit-approximate engine
V_FRAC_BITS = 16  # fixed-point membrane: bits below the finest weight exponent
L_BITS = 20  # fixed-point replayed learning signal: |L| < 2^L_BITS


@dataclass
class TaskResult:
    z_demo: np.ndarray  # [T, N] uint8
    z_test: np.ndarray  # [T, N] uint8
    psi: np.ndarray  # [T, N] ψ as the Lava neuron computed it
    y2: np.ndarray  # [T, N] third factor sent
    signal: np.ndarray  # [T, N] learning signal L^t as the neuron received it
    tag: dict  # connection -> tag before the update (float: −η Σ ψ L x̄; fixed: integer tag)
    w_before: dict  # connection -> weights as the engine holds them (float values or register integers)
    w_after: dict
    delta_w: dict  # connection -> ΔW in float units
    seconds: float


# the exponents a learning-rule literal may have (Lava's ProductSeries; its mantissa lies in [−8, 7])
LITERAL_EXPONENTS = range(-7, 9)


def literal(exp: int, what: str) -> str:
    """``2^exp`` as a learning-rule literal (larger powers through the mantissa)."""
    if exp in LITERAL_EXPONENTS:
        return f"2^{exp}"
    if 9 <= exp <= 10:
        return f"{2 ** (exp - 8)}*2^8"
    raise ArtefactError("rule.json", f"number_format: {what} 2^{exp} is outside the learning engine's literal range "
                        "2^-7 … 2^10")


def _decay(art: Artefact) -> float:
    decays = {c.weights: float(c.trace.decay) for c in art.rule.plastic}
    if not math.isclose(decays["w_in"], decays["w_rec"], rel_tol=1e-9):
        raise ArtefactError("rule.json", f"trace decays differ ({decays}): one third factor per neuron serves both "
                            "connections, so their 1/α compensation must agree")
    return decays["w_in"]


def _per_connection(value, name: str):
    return value[name] if isinstance(value, dict) else value


def fixed_scales(art: Artefact) -> dict:
    """The integer formats of the fixed-point run, read from the export's number format."""
    fmt = art.number_format
    scales = fmt.get("scales", {})
    out = {}
    for name in ("w_in", "w_rec"):
        impulse = int(round(_per_connection(fmt["trace_impulse"], name)))
        if impulse <= 0 or impulse & (impulse - 1):
            raise ArtefactError("rule.json", f"number_format.trace_impulse[{name}] = {impulse}: must be a power of 2")
        product = _per_connection(fmt.get("product_exp", scales.get("product_exp", 0)), name)
        update = _per_connection(fmt.get("update_exp", scales.get("update_exp", fmt.get("dw_shift"))), name)
        if update is None:
            raise ArtefactError("rule.json", "number_format: missing the update exponent (update_exp or dw_shift)")
        out[name] = {"weight_exp": int(_per_connection(fmt["weight_exp"], name)), "impulse": impulse,
                     "i": int(math.log2(impulse)), "p": int(product), "k": int(update)}
    return out


def rules(art: Artefact, precision: str, shadow: bool = False) -> tuple[dict, dict]:
    """Rule strings and trace parameters per connection, and the neuron's y2 scale. ``shadow``: the learning
    copies receive the presynaptic spikes late enough that ``x1`` is already the trace e-prop pairs with ψ^t (no
    x0 correction, no 1/α); otherwise the compensated pairing ``x1 − I·x0``."""
    alpha = _decay(art)
    tau = -1.0 / math.log(alpha)
    comp = 1.0 if shadow else alpha
    out = {}
    adaptive = art.rule.adaptation is not None
    if adaptive:
        w_rec = art.weights["w_rec"]
        zeros = int((w_rec[~np.eye(w_rec.shape[0], dtype=bool)] == 0).sum())
        if zeros:
            raise ArtefactError("weights.npz", f"w_rec: {zeros} off-diagonal weights are exactly 0; an ALIF learner's "
                                "W_rec masks its diagonal by sgn(w)², which would freeze them")
    if precision == "float":
        for name in ("w_in", "w_rec"):
            # ALIF: d holds ε_a, and W_rec's zero diagonal is the mask: sgn(w)² is 0 there, 1 elsewhere
            dw = "y0*t" if name == "w_in" else "y0*t*sgn(w)*sgn(w)" if adaptive else "2^-7*y0*t*d"
            dt = "u0*x1*y2 - y0*t" if shadow else "u0*x1*y2 - x0*y2 - y0*t"
            spec = {"dt": dt, "dw": dw, "x1_impulse": 1.0, "x1_tau": tau}
            if adaptive:  # d = comp·h/s, h = β·ε_a: t −= y2·d, d += y3·(trace) − y1·d
                spec["dt"] = dt.replace(" - y0*t", " - u0*y2*d - y0*t")
                spec["dd"] = "u0*x1*y3 - u0*y1*d" if shadow else "u0*x1*y3 - x0*y3 - u0*y1*d"
            out[name] = spec
        impulse = float(art.plastic("w_in").trace.impulse)
        return out, {"y_scale": -float(art.rule.inner_lr) * impulse / (comp * RHO_Y), "adaptation_scale": 1 / RHO_Y}
    scales = fixed_scales(art)
    split = bool(art.number_format.get("y_split"))
    y_bits = int(art.number_format["y_bits"])
    for name, sc in scales.items():
        p, i, k = sc["p"], sc["i"], sc["k"]
        if not -8 <= p <= 7:
            raise ArtefactError("rule.json", f"number_format: product exponent {p} of {name} outside [-8, 7]")
        products = [f"4*2^{p + 1}*u0*x1*y2"]
        if not shadow:
            products.append(f"- {literal(p + i, f'product·impulse scale of {name}')}*x0*y2")
        if split:
            products += _split_products(p, i, y_bits, name, shadow)
        dt = " ".join([*products, "- y0*t"])
        dw = f"{literal(k, f'update scale of {name}')}*y0*t" + ("*d" if name == "w_rec" else "")
        out[name] = {"dt": dt, "dw": dw, "x1_impulse": sc["impulse"], "x1_tau": tau}
    return out, {"y_scale": -float(art.number_format["y_scale"]) / comp}


def _split_products(p: int, i: int, y_bits: int, name: str, shadow: bool) -> list[str]:
    """The tag's y3 terms of ψL split over y2 + 2^-b·y3 (b = y_bits). The neuron sends y1 = 1 beside y3: the
    engine shifts a product right by the sum of its factor widths (7 bits each, 4 for the mantissa) beyond 15
    bits, so a third factor takes 7 more bits off ``x1·y3`` than ``x1·y2`` loses (10 instead of 3); with the
    exponent one lower that is 2^-8 of the y2 term's scale. Where that exponent is below the engine's literals
    (2^-7), a smaller mantissa carries the factor instead (one bit coarser each). The correction of the
    compensated pairing is ``2^(p+i-8)·x0·y3`` where that literal exists, else the same through y1."""
    if y_bits != 8:
        raise ArtefactError("rule.json", f"number_format.y_bits: {y_bits}; the learning engine's y3 term scales "
                            "by 2^-8 (y_split needs y_bits = 8)")
    # mantissa·2^e = 4·2^p with the y1 factor's extra 7-bit shift: 2^-8 of the y2 term 4·2^(p+1) without it
    main = _mantissa_literal([(4, p), (2, p + 1), (1, p + 2)], f"split product scale of {name}")
    products = [f"+ {main}*u0*x1*y3*y1"]
    if not shadow:
        q = p + i - y_bits
        if q in LITERAL_EXPONENTS:
            products.append(f"- 2^{q}*x0*y3")
        else:  # through y1 the product is shifted right by 3 (a mantissa of 4 keeps one of those bits)
            scale = _mantissa_literal([(4, q + 1), (2, q + 2), (1, q + 3)], f"split correction of {name}",
                                      "; run it with --pairing shadow, which needs no correction")
            products.append(f"- {scale}*x0*y3*y1")
    return products


def _mantissa_literal(options: list[tuple[int, int]], what: str, hint: str = "") -> str:
    """The first ``mantissa*2^exp`` of ``options`` whose exponent the engine's literals hold."""
    for mantissa, exp in options:
        if exp in LITERAL_EXPONENTS:
            return f"{mantissa}*2^{exp}"
    raise ArtefactError("rule.json", f"number_format: {what} {options[0][0]}·2^{options[0][1]} is outside the "
                        f"learning engine's literal range{hint}")


def quantize_register(w: np.ndarray, exp: int, weight_bits: int = 8) -> np.ndarray:
    """Initial weights → 9-bit register integers (8-bit mantissa, rounded to nearest, shifted left by one): the
    torch side's ``inner_loop.fixed_point.quantize_weights`` at ``LOIHI.weight_bits`` (pinned by
    tests/test_lava_mirrors.py)."""
    top = 2 ** (weight_bits - 1)
    mantissa = np.clip(np.round(w.astype(np.float64) * 2.0 ** (-exp) / 2.0), -top, top - 1)
    return (mantissa * 2).astype(np.int64)


def _module_constants(art: Artefact) -> dict:
    spec = art.rule.learning_signal.neurons
    constants = {"model": spec["model"], "alpha": float(spec["alpha"]), "v_th": float(spec["v_th"]),
                 "n_ref": int(spec["n_ref"]), "gamma_pd": float(spec["gamma_pd"]),
                 "input_scale": float(spec["input_scale"]), "surrogate": spec["surrogate"]}
    if spec["model"] == "alif":
        constants.update(n=int(spec["n"]), n_adaptive=int(spec["n_adaptive"]), beta=float(spec["beta"]),
                         rho=float(spec["rho"]))
    return constants


def run_task(art: Artefact, task: int, precision: str, workdir: str, signal: str = "replay",
             pairing: str | None = None, seed: int = 0) -> TaskResult:
    """Build, run and stop the Lava network of one task; every runtime is stopped before returning. The neuron
    model writes its records into ``workdir``.

    ``signal``: ``replay`` (the exported L^t drives the third-factor input) or ``module`` (the error module, or
    e-prop 1's readout, output error and feedback projection, runs in Lava: it sees the learner's spikes of the
    same step, so L^t reaches the learner D = 2 steps after ψ^t and the learning copies of the synapses receive
    their presynaptic spikes D+1 steps late: ``shadow`` pairing).
    ``pairing``: ``compensated`` (one set of synapses, x1 − I·x0; the default with replay) or ``shadow``."""
    d, w = art.demos, art.weights
    neurons = art.neurons
    n, n_in = int(neurons["n"]), art.rule.learner.n_in
    fixed = precision == "fixed"
    # the fixed-point emulation's own learning signal, where the export holds it (its spikes, hence L, differ)
    x, signals = d["x"][task], d["q_signals" if fixed and "q_signals" in d else "signals"][task]
    steps = x.shape[0]
    module = signal == "module"
    pairing = pairing or ("shadow" if module else "compensated")
    shadow = pairing == "shadow"
    if module and not shadow:
        raise ArtefactError("--signal", "the error module in Lava needs the shadow pairing")
    module_format = None
    if module and fixed:
        module_format = fixed_module_format(art)
    lag = 2 if module else 0
    total = 2 * steps + 3 + lag
    rule_spec, y = rules(art, precision, shadow)

    # x^t at Lava step t (transmission), at t+1+lag (learning copies, shadow), test trial from T+2+lag
    x_data = np.zeros((n_in, total))
    x_data[:, 0:steps] = x.T
    x_learn = np.zeros((n_in, total))
    if shadow:
        x_learn[:, lag + 1 : lag + 1 + steps] = x.T
        x_learn[:, steps + 2 + lag : 2 * steps + 2 + lag] = x.T
    else:
        x_data[:, steps + 2 : 2 * steps + 2] = x.T
    l_data = np.zeros((n, total))
    l_data[:, 1 + lag : steps + 1 + lag] = signals.T  # L^t at the Lava step where y2 for ψ^t is sent

    constants = {"alpha": float(neurons["alpha"]), "v_th": float(neurons["v_th"]), "n_ref": int(neurons["n_ref"]),
                 "gamma_pd": float(neurons["gamma_pd"]), "input_scale": float(neurons["input_scale"]),
                 "surrogate": neurons["surrogate"], "y_scale": y["y_scale"]}
    adaptive = art.rule.adaptation is not None
    if adaptive:
        constants.update(model="alif", n=n, n_adaptive=int(neurons["n_adaptive"]), beta=float(neurons["beta"]),
                         rho=float(neurons["rho"]), adaptation_scale=y["adaptation_scale"])
    record_path = str(Path(workdir) / f"records_{task}.npz")
    constants["record_path"] = record_path
    if fixed:
        scales = fixed_scales(art)
        fmt = art.number_format
        if neurons["surrogate"] != "triangle" or not math.isclose(float(neurons["input_scale"]), 1.0):
            raise ArtefactError("rule.json", "fixed-point learner neurons implement the triangle pseudo-derivative "
                                "and input_scale 1")
        e_min = min(sc["weight_exp"] for sc in scales.values())
        v_exp = e_min - V_FRAC_BITS
        v_th_int = int(round(float(neurons["v_th"]) * 2.0 ** (-v_exp)))
        if module_format is not None:  # the signal filter's integers: L = L_int·2^signal_exp
            l_exp = -int(module_format["signal_exp"])
        else:
            l_max = float(np.abs(signals).max()) or 1.0
            l_exp = L_BITS - max(0, math.ceil(math.log2(l_max)) + 1)
        l_data = np.round(l_data * 2.0**l_exp)
        psi_unit = float(neurons["gamma_pd"]) / (float(neurons["v_th"]) * v_th_int)
        y_bits = int(fmt["y_bits"])
        constants.update({"alpha_mant": int(round(constants["alpha"] * 2**24)), "v_th_int": v_th_int,
                          "in_shift": V_FRAC_BITS, "psi_unit": psi_unit,
                          "k_y": y["y_scale"] * psi_unit * 2.0 ** (-l_exp),
                          # FixedFormat.y_range (inner_loop/fixed_point.py)
                          "y_min": -(2 ** (y_bits - 1)), "y_max": 2 ** (y_bits - 1) - 1, "y_bits": y_bits,
                          "y_split": bool(fmt.get("y_split")),
                          "rounding": fmt["rounding"], "seed": int(fmt.get("seed", seed)) + task})
        w_init = {name: quantize_register(w[name], scales[name]["weight_exp"]) for name in ("w_in", "w_rec")}
        # num_weight_bits: LOIHI.weight_bits (inner_loop/fixed_point.py)
        conn_kw = {name: {"weight_exp": scales[name]["weight_exp"] - e_min, "num_weight_bits": 8}
                   for name in ("w_in", "w_rec")}
        unit = {name: 2.0 ** scales[name]["weight_exp"] for name in ("w_in", "w_rec")}
    else:
        w_init = {name: w[name].astype(np.float64) for name in ("w_in", "w_rec")}
        conn_kw = {"w_in": {}, "w_rec": {}}
        unit = {"w_in": 1.0, "w_rec": 1.0}
    # the neuron sends y1 and y3, and both connections take them: ε_a's factors (ALIF), or the split's y3 with y1 = 1
    constants["sends_y1_y3"] = adaptive or constants.get("y_split", False)
    mask = TAG_2_MASK * (1 - np.eye(n))

    lrules = {name: Loihi3FLearningRule(dw=spec["dw"], dt=spec["dt"], dd=spec.get("dd"), x1_impulse=spec["x1_impulse"],
                                        x1_tau=spec["x1_tau"], t_epoch=1, rng_seed=seed + task)
              for name, spec in rule_spec.items()}
    neuron = EpropLearnerNeuron(shape=(n,), learning_rule=lrules["w_in"], constants=constants, n_demo=steps,
                                delay=lag, shadow=shadow, name="learner")
    conn_in = LearningDense(weights=w_init["w_in"], learning_rule=lrules["w_in"], name="w_in", **conn_kw["w_in"])
    # ALIF: d holds ε_a (from 0); the zero diagonal of W_rec masks itself through sgn(w)
    conn_rec = LearningDense(weights=w_init["w_rec"], tag_2=None if adaptive else mask, learning_rule=lrules["w_rec"],
                             name="w_rec", **conn_kw["w_rec"])
    source_x = RingBuffer(data=x_data)
    if shadow:  # transmission through plain Dense copies; the learning copies drive the test trial
        plain_in = Dense(weights=w_init["w_in"], name="w_in_transmission", **conn_kw["w_in"])
        plain_rec = Dense(weights=w_init["w_rec"], name="w_rec_transmission", **conn_kw["w_rec"])
        source_x.s_out.connect(plain_in.s_in)
        plain_in.a_out.connect(neuron.a_in)
        neuron.s_out.connect(plain_rec.s_in)
        plain_rec.a_out.connect(neuron.a_in)
        source_learn = RingBuffer(data=x_learn)
        source_learn.s_out.connect(conn_in.s_in)
        neuron.s_out_learn.connect(conn_rec.s_in)
        conn_in.a_out.connect(neuron.a_in_plastic)
        conn_rec.a_out.connect(neuron.a_in_plastic)
    else:
        source_x.s_out.connect(conn_in.s_in)
        neuron.s_out.connect(conn_rec.s_in)
        conn_in.a_out.connect(neuron.a_in)
        conn_rec.a_out.connect(neuron.a_in)
    if module and art.rule.is_feedback:
        _connect_feedback(art, task, steps, total, neuron)
    elif module:
        _connect_error_module(art, task, steps, total, neuron, module_format)
    else:
        RingBuffer(data=l_data).s_out.connect(neuron.a_third_factor_in)
    for conn in (conn_in, conn_rec):
        neuron.s_out_bap.connect(conn.s_in_bap)
        neuron.s_out_y2.connect(conn.s_in_y2)
        if constants["sends_y1_y3"]:
            neuron.s_out_y1.connect(conn.s_in_y1)
            neuron.s_out_y3.connect(conn.s_in_y3)

    run_cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt")
    start = time.perf_counter()
    try:
        neuron.run(condition=RunSteps(num_steps=steps + 1 + lag), run_cfg=run_cfg)  # demonstration
        # Var.get() sends one message per element: read only what the float run cannot infer (its tag is ΔW)
        tag = {"w_in": conn_in.tag_1.get(), "w_rec": conn_rec.tag_1.get()} if fixed else None
        neuron.run(condition=RunSteps(num_steps=1), run_cfg=run_cfg)  # bap: the tag goes into the weights
        after = {"w_in": conn_in.weights.get(), "w_rec": conn_rec.weights.get()}
        neuron.run(condition=RunSteps(num_steps=steps + 1), run_cfg=run_cfg)  # test trial
    except BaseException:
        # stopped mid-start (a SIGTERM's SystemExit inside Lava's shared-memory manager), the runtime cannot stop
        # cleanly and its error would bury the exit in a traceback: the exception in flight is what counts, and
        # the program's own clean-up ends the runtime processes
        with contextlib.suppress(Exception):
            neuron.stop()
        raise
    neuron.stop()
    seconds = time.perf_counter() - start
    with np.load(record_path) as data:
        rec = {k: data[k] for k in data.files}
    Path(record_path).unlink()
    before = {name: w_init[name].astype(np.float64) for name in w_init}
    delta = {name: (after[name] - before[name]) * unit[name] for name in after}
    if tag is None:
        tag = {name: after[name] - before[name] for name in after}
    sent = slice(1 + lag, steps + 1 + lag)
    if fixed:
        rec["signal"] = rec["signal"] * 2.0 ** (-l_exp)  # the integer signal back in float units
    return TaskResult(z_demo=rec["z"][:, 1 : steps + 1].T.astype(np.uint8),
                      z_test=rec["z"][:, steps + 3 + lag : 2 * steps + 3 + lag].T.astype(np.uint8),
                      psi=rec["psi"][:, 1 : steps + 1].T, y2=rec["y2"][:, sent].T, signal=rec["signal"][:, sent].T,
                      tag=tag, w_before=before, w_after=after, delta_w=delta, seconds=seconds)


def module_registers(w: np.ndarray, exp: int, scale: float = 1.0) -> np.ndarray:
    """A module matrix as Dense register integers: the 8-bit mantissa round(s·W·2^−e) (halves up, as the torch
    emulation rounds), shifted left by one (Lava's mixed-sign 8-bit weights drop their lowest bit)."""
    mantissa = np.clip(np.floor(w.astype(np.float64) * scale * 2.0 ** (-exp) + 0.5), -128, 127)
    return (mantissa * 2).astype(np.int64)


def _connect_error_module(art: Artefact, task: int, steps: int, total: int, learner, fixed: dict | None = None) -> None:
    """The error module in Lava. It computes its step t at Lava step t+2 from the context and input of step t
    (sources emitting at t+1) and the learner's spikes z^t (sent at t+1): the same-step dependence of our model,
    one Dense hop later. Its spikes ζ^t reach the signal filter at t+3 through em_proj, which sends
    L^t = d·L^{t-1} + em_proj·ζ^t straight to the learner's third-factor input at step t+3 = (t+1) + D, D = 2."""
    d, w = art.demos, art.weights
    spec = art.rule.learning_signal
    m = int(spec.neurons["n"])
    constants = _module_constants(art)
    matrices = {name: w[name].astype(np.float64) for name in ("em_w_in", "em_w_rec", "em_proj")}
    kw = {name: {} for name in matrices}
    if fixed is not None:  # registers 2·mantissa at unit 2^(e−1); the Dense shifts each to the finest input unit
        e = fixed["weight_exp"]
        e_min = min(e["em_w_in"], e["em_w_rec"])
        scale = float(constants["input_scale"])
        for name in matrices:
            matrices[name] = module_registers(w[name], e[name], scale if name != "em_proj" else 1.0)
            kw[name] = {"weight_exp": e[name] - (e_min if name != "em_proj" else e[name]), "num_weight_bits": 8}
        # membrane unit 2^v_exp = 2^(e_min − v_frac): the Dense output (unit 2^(e_min − 1)) shifted by v_frac − 1
        constants.update(v_th_int=int(fixed["v_th_int"]), alpha_mant=int(fixed["alpha_mant"]),
                         decay_bits=int(fixed["decay_bits"]), in_shift=int(fixed["v_frac_bits"]) - 1)
    em = ModuleNeuron(shape=(m,), constants=constants, name="error_module")
    columns, start = {}, 0
    for kind, width in spec.inputs:
        columns[kind] = slice(start, start + int(width))
        start += int(width)
    if start != w["em_w_in"].shape[1]:
        raise ArtefactError("rule.json", f"learning_signal.inputs add up to {start} columns, em_w_in has "
                            f"{w['em_w_in'].shape[1]}")
    for kind, cols in columns.items():
        conn = Dense(weights=matrices["em_w_in"][:, cols], name=f"em_in_{kind}", **kw["em_w_in"])
        conn.a_out.connect(em.a_in)
        if kind == "learner_spikes":
            learner.s_out.connect(conn.s_in)
            continue
        series = d["context"][task] if kind == "context" else d["x"][task]
        data = np.zeros((series.shape[1], total))
        data[:, 1 : steps + 1] = series.T  # emitted at Lava step t+1
        source = RingBuffer(data=data)
        source.s_out.connect(conn.s_in)
    rec = Dense(weights=matrices["em_w_rec"], name="em_rec", **kw["em_w_rec"])
    em.s_out.connect(rec.s_in)
    rec.a_out.connect(em.a_in)
    proj = Dense(weights=matrices["em_proj"], name="em_proj", **kw["em_proj"])
    em.s_out.connect(proj.s_in)
    filt_constants = None if fixed is None else {"decay_mant": int(fixed["filter_decay_mant"]),
                                                 "decay_bits": int(fixed["decay_bits"]),
                                                 "in_shift": int(fixed["v_frac_bits"]) - 1}
    filt = SignalFilter(shape=(int(art.neurons["n"]),), decay=float(spec.filter_decay), constants=filt_constants,
                        name="signal_filter")
    proj.a_out.connect(filt.a_in)
    filt.s_out.connect(learner.a_third_factor_in)


def feedback_matrix(art: Artefact) -> np.ndarray:
    """e-prop 1's B ``[n, n_out]`` as the description states it: ``scale·w_outᵀ`` (symmetric) or ``scale·b_fb``."""
    spec = art.rule.learning_signal
    matrix = art.weights[spec.projection].astype(np.float64)
    return float(spec.scale) * (matrix.T if spec.transposed else matrix)


def _connect_feedback(art: Artefact, task: int, steps: int, total: int, learner) -> None:
    """e-prop 1 in Lava: the learner's spikes z^t (sent at Lava step t+1) reach the readout through W^out at t+2,
    where it computes y^t; the output error process forms mask·(y^t − y*^t) in the same step from the target and
    the mask (sources emitting y*^t at t+2), and the Dense feedback projection B delivers L^t = B·err^t to the
    learner's third-factor input at t+3 = (t+1) + D, D = 2: the lag of the error module's path."""
    d, w = art.demos, art.weights
    spec = art.readout
    n_out = int(spec["n_out"])
    bias = w["b_out"].astype(np.float64) if "b_out" in w else np.zeros(n_out)
    readout = Readout(shape=(n_out,), constants={"kappa": float(spec["kappa"]),
                                                 "input_scale": float(spec["input_scale"]), "bias": bias.tolist()},
                      name="readout")
    w_out = Dense(weights=w["w_out"].astype(np.float64), name="w_out")
    learner.s_out.connect(w_out.s_in)
    w_out.a_out.connect(readout.a_in)
    error = OutputError(shape=(n_out,), name="output_error")
    readout.s_out.connect(error.y_in)
    for series, port in ((d["omega_target"][task], error.target_in), (d["mask"][task][:, None], error.mask_in)):
        data = np.zeros((series.shape[1], total))
        data[:, 2 : steps + 2] = series.T  # emitted at Lava step t+2, where y^t is formed
        RingBuffer(data=data).s_out.connect(port)
    # graded error values: a Dense with message bits multiplies them (without, it sums the columns of spikes)
    projection = Dense(weights=feedback_matrix(art), num_message_bits=24, name="feedback_B")
    error.s_out.connect(projection.s_in)
    projection.a_out.connect(learner.a_third_factor_in)
