"""The learning network of one task in Lava: e-prop's one-shot update on the learning engine, then the test trial.

Processes (one network per task)::

    RingBuffer x ──▶ LearningDense W_in ──▶ EpropLearnerNeuron ──▶ s_out ──▶ LearningDense W_rec ──┐
                                                ▲    │ s_out_y2 (y2 = c·ψ·L), s_out_bap            │
    RingBuffer L ──▶ a_third_factor_in ─────────┘    └──▶ both LearningDense (s_in_y2, s_in_bap)   │
                                                ▲ a_in ◀──────────────────────────────────────────┘

Both connections carry a :class:`Loihi3FLearningRule` (``t_epoch = 1``):

* tag, every step: ``dt = S·u0·x1·y2 − S·I·u0·x0·y2 − y0·t``. Lava's trace ``x1`` at Lava step t+1 (our step
  t) already holds the presynaptic spike of that step (x^{t+1} for W_in, z^t for W_rec), one step later than
  e-prop pairs with ψ^t. Since ``x1 = α·x1_before + I·x0``, the difference ``x1 − I·x0`` is α times the
  trace e-prop wants; the neuron's y2 scale carries the 1/α.
* weights, once: the neuron sends ``bap = 1`` (and y2 = 0) at Lava step T+2 only, so ``dw = 2^k·y0·t`` moves
  the tag into the weights and ``−y0·t`` clears it in the same epoch. W_rec's rule multiplies by ``d``
  (tag_2, a per-synapse constant 128 off the diagonal and 0 on it) so that no self-connection is learned.

Float (``floating_pt``): impulse I = 1, S = 1, y2 = −η·s·ψ·L/(α·ρ_y) with ρ_y = e^{−1/65535} the decay Lava
applies to the third-factor traces inside the epoch; the tag then equals −η Σ_t ψ_j L_j x̄_i.
Fixed (``fixed_pt``, Lava's bit-approximate learning engine): the export's integer formats — weight register
integers with one exponent per connection, trace impulse 2^i, product exponent p, update exponent k,
y2 = round(−y_scale·ψ·L/α) in y_bits. ``S·x1·y2`` is written ``4·2^(p+1)·x1·y2`` so that the engine's
right shift by 3 (two 7-bit factors) drops one bit instead of three.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from lava.magma.core.learning.learning_rule import Loihi3FLearningRule
from lava.magma.core.run_conditions import RunSteps
from lava.magma.core.run_configs import Loihi2SimCfg
from lava.proc.dense.process import LearningDense
from lava.proc.io.source import RingBuffer

from .artefacts import Artefact, ArtefactError
from .procs.process import EpropLearnerNeuron

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
    tag: dict  # connection -> tag before the update (float: −η Σ ψ L x̄; fixed: integer tag)
    w_before: dict  # connection -> weights as the engine holds them (float values or register integers)
    w_after: dict
    delta_w: dict  # connection -> ΔW in float units
    seconds: float


def literal(exp: int, what: str) -> str:
    """``2^exp`` as a learning-rule literal (mantissa ∈ [−8, 7], exponent ∈ [−7, 8])."""
    if -7 <= exp <= 8:
        return f"2^{exp}"
    if 9 <= exp <= 10:
        return f"{2 ** (exp - 8)}*2^8"
    raise ArtefactError("rule.json", f"number_format: {what} 2^{exp} is outside the learning engine's literal range "
                        "2^-7 … 2^10")


def _decay(art: Artefact) -> float:
    decays = {c["weights"]: float(c["trace"]["decay"]) for c in art.rule["plastic"]}
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


def rules(art: Artefact, precision: str) -> tuple[dict, dict]:
    """Rule strings and trace parameters per connection, and the neuron's y2 scale (float: c; fixed: factor)."""
    alpha = _decay(art)
    tau = -1.0 / math.log(alpha)
    out = {}
    if precision == "float":
        for name in ("w_in", "w_rec"):
            dw = "2^-7*y0*t*d" if name == "w_rec" else "y0*t"
            out[name] = {"dt": "u0*x1*y2 - u0*x0*y2 - y0*t", "dw": dw, "x1_impulse": 1.0, "x1_tau": tau}
        impulse = float(art.plastic("w_in")["trace"]["impulse"])
        return out, {"y_scale": -float(art.rule["eta"]) * impulse / (alpha * RHO_Y)}
    scales = fixed_scales(art)
    for name, sc in scales.items():
        p, i, k = sc["p"], sc["i"], sc["k"]
        if not -8 <= p <= 7:
            raise ArtefactError("rule.json", f"number_format: product exponent {p} of {name} outside [-8, 7]")
        correction = literal(p + i, f"product·impulse scale of {name}")
        dt = f"4*2^{p + 1}*u0*x1*y2 - {correction}*u0*x0*y2 - y0*t"
        dw = f"{literal(k, f'update scale of {name}')}*y0*t" + ("*d" if name == "w_rec" else "")
        out[name] = {"dt": dt, "dw": dw, "x1_impulse": sc["impulse"], "x1_tau": tau}
    return out, {"y_scale": -float(art.number_format["y_scale"]) / alpha}


def quantize_register(w: np.ndarray, exp: int, weight_bits: int = 8) -> np.ndarray:
    """Initial weights → 9-bit register integers (8-bit mantissa, rounded to nearest, shifted left by one)."""
    top = 2 ** (weight_bits - 1)
    mantissa = np.clip(np.round(w.astype(np.float64) * 2.0 ** (-exp) / 2.0), -top, top - 1)
    return (mantissa * 2).astype(np.int64)


def run_task(art: Artefact, task: int, precision: str, seed: int = 0) -> TaskResult:
    """Build, run and stop the Lava network of one task; every runtime is stopped before returning."""
    d, w = art.demos, art.weights
    neurons = art.neurons
    n, n_in = int(neurons["n"]), int(art.rule["learner"]["n_in"])
    x, signals = d["x"][task], d["signals"][task]
    steps = x.shape[0]
    total = 2 * steps + 3
    rule_spec, y = rules(art, precision)
    fixed = precision == "fixed"

    x_data = np.zeros((n_in, total))
    x_data[:, 0:steps] = x.T  # x^t at Lava step t (demonstration)
    x_data[:, steps + 2 : 2 * steps + 2] = x.T  # x^t at Lava step T+2+t (test trial)
    l_data = np.zeros((n, total))
    l_data[:, 1 : steps + 1] = signals.T  # L^t at Lava step t+1, the step whose neuron update is our step t

    constants = {"alpha": _decay(art), "v_th": float(neurons["v_th"]), "n_ref": int(neurons["n_ref"]),
                 "gamma_pd": float(neurons["gamma_pd"]), "input_scale": float(neurons["input_scale"]),
                 "surrogate": neurons["surrogate"], "y_scale": y["y_scale"]}
    if fixed:
        scales = fixed_scales(art)
        fmt = art.number_format
        if neurons["surrogate"] != "triangle" or not math.isclose(float(neurons["input_scale"]), 1.0):
            raise ArtefactError("rule.json", "fixed-point learner neurons implement the triangle pseudo-derivative "
                                "and input_scale 1")
        e_min = min(sc["weight_exp"] for sc in scales.values())
        v_exp = e_min - V_FRAC_BITS
        v_th_int = int(round(float(neurons["v_th"]) * 2.0 ** (-v_exp)))
        l_max = float(np.abs(signals).max()) or 1.0
        l_exp = L_BITS - max(0, math.ceil(math.log2(l_max)) + 1)
        l_data = np.round(l_data * 2.0**l_exp)
        psi_unit = float(neurons["gamma_pd"]) / (float(neurons["v_th"]) * v_th_int)
        y_bits = int(fmt["y_bits"])
        constants.update({"alpha_mant": int(round(constants["alpha"] * 2**24)), "v_th_int": v_th_int,
                          "in_shift": V_FRAC_BITS, "psi_unit": psi_unit,
                          "k_y": y["y_scale"] * psi_unit * 2.0 ** (-l_exp),
                          "y_min": -(2 ** (y_bits - 1)), "y_max": 2 ** (y_bits - 1) - 1,
                          "rounding": fmt.get("rounding", "nearest"), "seed": int(fmt.get("seed", seed)) + task})
        w_init = {name: quantize_register(w[name], scales[name]["weight_exp"]) for name in ("w_in", "w_rec")}
        conn_kw = {name: {"weight_exp": scales[name]["weight_exp"] - e_min, "num_weight_bits": 8}
                   for name in ("w_in", "w_rec")}
        unit = {name: 2.0 ** scales[name]["weight_exp"] for name in ("w_in", "w_rec")}
    else:
        w_init = {name: w[name].astype(np.float64) for name in ("w_in", "w_rec")}
        conn_kw = {"w_in": {}, "w_rec": {}}
        unit = {"w_in": 1.0, "w_rec": 1.0}
    mask = TAG_2_MASK * (1 - np.eye(n))

    lrules = {name: Loihi3FLearningRule(dw=spec["dw"], dt=spec["dt"], x1_impulse=spec["x1_impulse"],
                                        x1_tau=spec["x1_tau"], t_epoch=1, rng_seed=seed + task)
              for name, spec in rule_spec.items()}
    source_x = RingBuffer(data=x_data)
    source_l = RingBuffer(data=l_data)
    conn_in = LearningDense(weights=w_init["w_in"], learning_rule=lrules["w_in"], name="w_in", **conn_kw["w_in"])
    conn_rec = LearningDense(weights=w_init["w_rec"], tag_2=mask, learning_rule=lrules["w_rec"], name="w_rec",
                             **conn_kw["w_rec"])
    neuron = EpropLearnerNeuron(shape=(n,), learning_rule=lrules["w_in"], constants=constants, n_demo=steps,
                                name="learner")
    source_x.s_out.connect(conn_in.s_in)
    conn_in.a_out.connect(neuron.a_in)
    neuron.s_out.connect(conn_rec.s_in)
    conn_rec.a_out.connect(neuron.a_in)
    source_l.s_out.connect(neuron.a_third_factor_in)
    for conn in (conn_in, conn_rec):
        neuron.s_out_bap.connect(conn.s_in_bap)
        neuron.s_out_y2.connect(conn.s_in_y2)

    run_cfg = Loihi2SimCfg(select_tag="fixed_pt" if fixed else "floating_pt")
    start = time.perf_counter()
    try:
        neuron.run(condition=RunSteps(num_steps=steps + 1), run_cfg=run_cfg)  # demonstration
        tag = {"w_in": conn_in.tag_1.get().copy(), "w_rec": conn_rec.tag_1.get().copy()}
        before = {"w_in": conn_in.weights.get().copy(), "w_rec": conn_rec.weights.get().copy()}
        neuron.run(condition=RunSteps(num_steps=1), run_cfg=run_cfg)  # bap: the tag goes into the weights
        after = {"w_in": conn_in.weights.get().copy(), "w_rec": conn_rec.weights.get().copy()}
        neuron.run(condition=RunSteps(num_steps=steps + 1), run_cfg=run_cfg)  # test trial
        z_rec = neuron.z_rec.get().copy()
        psi_rec = neuron.psi_rec.get().copy()
        y2_rec = neuron.y2_rec.get().copy()
    finally:
        neuron.stop()
    seconds = time.perf_counter() - start
    delta = {name: (after[name] - before[name]) * unit[name] for name in after}
    return TaskResult(z_demo=z_rec[:, 1 : steps + 1].T.astype(np.uint8),
                      z_test=z_rec[:, steps + 3 : 2 * steps + 3].T.astype(np.uint8),
                      psi=psi_rec[:, 1 : steps + 1].T, y2=y2_rec[:, 1 : steps + 1].T, tag=tag, w_before=before,
                      w_after=after, delta_w=delta, seconds=seconds)
