"""Floating-point and fixed-point ProcessModels of the processes in :mod:`.process` (CPU simulation).

The learner's two models run the same schedule (see :mod:`.process`) and differ only in their arithmetic:

* ``floating_pt``: float64 membrane, float y2 = c·ψ·L.
* ``fixed_pt``: integer membrane ``v`` in units of ``2^v_exp`` (int64), integer currents from the fixed-point
  Dense models (units ``2^in_exp``, shifted left by ``in_shift`` into membrane units), the decay α as a 24-bit
  fraction (``v ← (v·α_m + 2^23) >> 24``), an integer threshold, ψ from the integer membrane, the replayed
  learning signal as an integer in units of ``2^-l_exp``, and y2 = round(k_y·ψ_int·L_int) saturated to the
  signed ``y_bits`` range (nearest, or stochastic with the neuron's own seeded generator).

The error module's LIF neurons and the signal filter have fixed-point models too, the arithmetic of the torch
side's emulation (``hardware/fixed_module.py``): integer membrane in units of 2^v_exp, currents from the
fixed-point Dense models shifted left by ``in_shift``, the leak as a ``decay_bits`` fraction with rounding to
nearest (``(v·α_m + 2^(b−1)) >> b``), an integer threshold; the filter the same leak on an integer signal. e-prop 1's
readout and output error, and ALIF module neurons, have floating-point models only.
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.model import PyLoihiProcessModel
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed, LearningNeuronModelFloat
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

# absolute import: Lava's compiler also executes this file as a top-level module while it looks for models
from eprop_l2l.hardware.lava.procs.process import (
    EpropLearnerNeuron,
    ModuleNeuron,
    OutputError,
    Readout,
    SignalFilter,
)


def lif_step(state, current, c, threshold_offset=0.0):
    """One step of our LIF in float64 (``cells/lif.py``: ``LIF.step`` and ``LIF.psi``, pinned by
    tests/test_lava_mirrors.py): ``state`` has v, ref, z (updated in place); returns (z, ψ). An ALIF's
    adaptive part of the threshold is ``threshold_offset`` (:func:`alif_step`); the reset subtracts v_th."""
    z_prev = state.z.astype(bool)
    n_ref = int(c["n_ref"])
    if n_ref > 0:
        state.ref = np.clip(state.ref + n_ref * z_prev - 1, 0, n_ref)
    v_th = float(c["v_th"])
    state.v = float(c["alpha"]) * state.v + float(c["input_scale"]) * current - v_th * z_prev
    x = (state.v - v_th - threshold_offset) / v_th
    z = (x > 0) & (state.ref == 0)
    if c["surrogate"] == "triangle":
        psi = (float(c["gamma_pd"]) / v_th) * np.maximum(0.0, 1.0 - np.abs(x))
    else:
        psi = (float(c["gamma_pd"]) / v_th) / (1.0 + np.abs(x)) ** 2
    psi = np.where(state.ref > 0, 0.0, psi)
    state.z = z.astype(int)
    return z, psi


def alif_step(state, current, c):
    """One step of our ALIF (``cells/alif.py``, pinned by tests/test_lava_mirrors.py): a^t = ρ a^{t-1} + z^{t-1}
    (``state.a``), threshold v_th + β_j a^t with β_j = β for the last ``n_adaptive`` of the ``n`` neurons and 0
    for the others; the rest is :func:`lif_step`."""
    state.a = float(c["rho"]) * state.a + state.z
    return lif_step(state, current, c, beta_vector(c) * state.a)


def beta_vector(c):
    """β_j of an ALIF population: β for the last ``n_adaptive`` of the ``n`` neurons, 0 for the others."""
    n, n_adaptive = int(c["n"]), int(c["n_adaptive"])
    return np.concatenate([np.zeros(n - n_adaptive), np.full(n_adaptive, float(c["beta"]))])


def neuron_step(state, current, c):
    """The step of the population's model (``c["model"]``: lif | alif)."""
    return alif_step(state, current, c) if c.get("model") == "alif" else lif_step(state, current, c)


class _Schedule:
    """The learner's trial schedule, shared by both models (Lava step ``s`` counts from 1)."""

    def _setup(self):
        p = self.proc_params
        self.n_demo, self.delay, self.shadow = int(p["n_demo"]), int(p["delay"]), bool(p["shadow"])
        self.total = 2 * self.n_demo + 3 + self.delay
        shape = (self.v.shape[0], self.total)
        self.rec = {"z": np.zeros(shape, np.uint8), "psi": np.zeros(shape), "y2": np.zeros(shape),
                    "signal": np.zeros(shape)}
        self.psi_fifo = {}

    def _reset(self):
        """The neuron state between the demonstration and the test trial (both models keep v, ref and z)."""
        self.v = np.zeros_like(self.v)
        self.ref = np.zeros_like(self.ref)
        self.z = np.zeros_like(self.z)
        self.a = np.zeros_like(self.a)

    def run_spk(self) -> None:
        if not hasattr(self, "rec"):
            self._setup()
        s, n, d, rec = int(self.time_step), self.n_demo, self.delay, self.rec
        current = self.a_in.recv()
        plastic = self.a_in_plastic.recv()
        signal = self.a_third_factor_in.recv()
        size = self.v.shape[0]
        z = np.zeros(size, dtype=bool)
        bap = np.zeros(size, dtype=bool)
        y2 = np.zeros(size)
        y1, y3 = np.zeros(size), np.zeros(size)
        learn = np.zeros(size, dtype=bool)
        if 2 <= s <= n + 1:  # demonstration dynamics, our step s - 1
            z, psi = self._advance(current)
            self.psi_fifo[s - 1] = psi
            rec["psi"][:, s - 1] = self._psi_value(psi)
        if 2 + d <= s <= n + 1 + d:  # third factor of our step s - 1 - d
            psi = self.psi_fifo.pop(s - 1 - d)
            y1, y2, y3 = self._factors(psi, signal)
            rec["y2"][:, s - 1] = y2
            rec["signal"][:, s - 1] = signal
            if self.shadow and s - d - 2 >= 0:
                learn = rec["z"][:, s - d - 2].astype(bool)  # z^{t-1} for the learning copy of W_rec
        if s == n + 2 + d:  # apply the tag once, then start the test trial from rest
            bap[:] = True
            self._reset()
        if n + 4 + d <= s <= 2 * n + 3 + d:  # test trial with the updated weights
            z, _ = self._advance(plastic if self.shadow else current)
            learn = z
        rec["z"][:, s - 1] = z
        self.s_out.send(self._spikes(z))
        self.s_out_learn.send(self._spikes(learn))
        self.s_out_bap.send(bap)
        self.s_out_y2.send(self._y(y2))
        c = self.proc_params["constants"]
        if c.get("sends_y1_y3"):  # connected for them by network.run_task; unconnected otherwise
            self.s_out_y1.send(self._y(y1))
            self.s_out_y3.send(self._y(y3))
        if s == self.total and c.get("record_path"):
            np.savez(c["record_path"], **rec)


def _leaky_integrate(state: np.ndarray, mant: int, bits: int, current: np.ndarray, in_shift: int) -> np.ndarray:
    """The integer leak and input of every fixed-point state here: round(state·mant / 2^bits) (an arithmetic
    shift, floor(state·mant/2^bits + ½)) plus the input current shifted into the state's scale."""
    return ((state.astype(np.int64) * mant + (1 << (bits - 1))) >> bits) + (current.astype(np.int64) << in_shift)


def fixed_lif_step(state, current: np.ndarray, alpha_mant: int, decay_bits: int, in_shift: int, v_th: int,
                   n_ref: int) -> np.ndarray:
    """One integer LIF step of the fixed-point learner and error-module neurons (``state`` has v, ref, z; updated
    in place): the refractory counter, the leak and input, the reset by subtraction one step late, the spike."""
    z_prev = state.z.astype(bool)
    if n_ref > 0:
        state.ref = np.clip(state.ref + n_ref * z_prev - 1, 0, n_ref)
    state.v = _leaky_integrate(state.v, alpha_mant, decay_bits, current, in_shift) - v_th * z_prev.astype(np.int64)
    z = (state.v > v_th) & (state.ref == 0)
    state.z = z.astype(int)
    return z


@implements(proc=EpropLearnerNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEpropLearnerNeuronFloat(_Schedule, LearningNeuronModelFloat):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    a_in_plastic: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    s_out_learn: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)
    a: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        self.c = proc_params["constants"]

    def _advance(self, current):
        return neuron_step(self, current, self.c)

    def _factors(self, psi, signal):
        """(y1, y2, y3): the third factor y2 = c·ψ·L, and an ALIF learner's ε_a factors c_a·(1 − ρ + β_j ψ) and
        c_a·β_j ψ (zeros for LIF)."""
        y2 = float(self.c["y_scale"]) * psi * signal
        if self.c.get("model") != "alif":
            return np.zeros_like(psi), y2, np.zeros_like(psi)
        beta_psi = beta_vector(self.c) * psi
        scale = float(self.c["adaptation_scale"])
        return scale * (1.0 - float(self.c["rho"]) + beta_psi), y2, scale * beta_psi

    @staticmethod
    def _psi_value(psi):
        return psi

    @staticmethod
    def _spikes(z):
        return z.astype(float)

    @staticmethod
    def _y(y):
        return y


@implements(proc=EpropLearnerNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEpropLearnerNeuronFixed(_Schedule, LearningNeuronModelFixed):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    a_in_plastic: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    s_out_learn: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=48)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)
    a: np.ndarray = LavaPyType(np.ndarray, int)  # unused: the fixed-point learner is LIF (network.py refuses ALIF)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        c = proc_params["constants"]
        self.alpha_m, self.v_th_int, self.n_ref = int(c["alpha_mant"]), int(c["v_th_int"]), int(c["n_ref"])
        self.in_shift, self.k_y = int(c["in_shift"]), float(c["k_y"])
        self.y_min, self.y_max = int(c["y_min"]), int(c["y_max"])
        self.psi_unit = float(c["psi_unit"])  # ψ = ψ_int·psi_unit (for the record only)
        self.stochastic = c["rounding"] == "stochastic"
        self.split, self.y_unit = bool(c.get("y_split")), 2.0 ** int(c["y_bits"])
        self.rng = np.random.default_rng(int(c["seed"]))

    def _advance(self, current):
        z = fixed_lif_step(self, current, self.alpha_m, 24, self.in_shift, self.v_th_int, self.n_ref)
        psi_int = np.maximum(0, self.v_th_int - np.abs(self.v - self.v_th_int))
        return z, np.where(self.ref > 0, 0, psi_int)

    def _round(self, y):
        return np.floor(y + self.rng.random(y.shape)) if self.stochastic else np.round(y)

    def _factors(self, psi_int, signal):
        """(y1, y2, y3): y2 = k_y·ψ_int·L_int rounded into the y range; with ψL split (the torch side's
        ``FixedArithmetic.third_factor``) y2 rounded to nearest, the residual in y3 with y_bits more bits, and
        y1 = 1, which the rule's y3 term multiplies by for its extra shift (network.py ``_split_products``)."""
        y = self.k_y * psi_int.astype(np.float64) * signal.astype(np.float64)
        zeros = np.zeros(psi_int.shape, np.int32)
        if not self.split:
            return zeros, np.clip(self._round(y), self.y_min, self.y_max), zeros
        y2 = np.clip(np.round(y), self.y_min, self.y_max)
        y3 = np.clip(self._round((y - y2) * self.y_unit), self.y_min, self.y_max)
        return np.ones(psi_int.shape, np.int32), y2, y3.astype(np.int32)

    def _psi_value(self, psi_int):
        return psi_int * self.psi_unit

    @staticmethod
    def _spikes(z):
        return z.astype(np.int32)

    @staticmethod
    def _y(y):
        return y.astype(np.int32)


@implements(proc=ModuleNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyModuleNeuronFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    a: np.ndarray = LavaPyType(np.ndarray, float)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)

    def run_spk(self) -> None:
        z, _ = neuron_step(self, self.a_in.recv(), self.proc_params["constants"])
        self.s_out.send(z.astype(float))


@implements(proc=SignalFilter, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PySignalFilterFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    signal: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        self.signal = float(self.proc_params["decay"]) * self.signal + self.a_in.recv()
        self.s_out.send(self.signal)


@implements(proc=Readout, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyReadoutFloat(PyLoihiProcessModel):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    y: np.ndarray = LavaPyType(np.ndarray, float)

    def run_spk(self) -> None:
        c = self.proc_params["constants"]
        self.y = float(c["kappa"]) * self.y + float(c["input_scale"]) * self.a_in.recv() + np.asarray(c["bias"])
        self.s_out.send(self.y)


@implements(proc=OutputError, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyOutputErrorFloat(PyLoihiProcessModel):
    y_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    target_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    mask_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)

    def run_spk(self) -> None:
        y, target, mask = self.y_in.recv(), self.target_in.recv(), self.mask_in.recv()
        self.s_out.send(mask[0] * (y - target))


@implements(proc=ModuleNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyModuleNeuronFixed(PyLoihiProcessModel):
    """The error module's LIF neurons at fixed point (``hardware/fixed_module.py``'s ``FixedModule.step``)."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=48)
    a: np.ndarray = LavaPyType(np.ndarray, int)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)

    def run_spk(self) -> None:
        c = self.proc_params["constants"]
        z = fixed_lif_step(self, self.a_in.recv().astype(np.int64), int(c["alpha_mant"]), int(c["decay_bits"]),
                           int(c["in_shift"]), int(c["v_th_int"]), int(c["n_ref"]))
        self.s_out.send(z.astype(np.int32))


@implements(proc=SignalFilter, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PySignalFilterFixed(PyLoihiProcessModel):
    """L^t = round(d·L^{t−1}) + (em_proj·ζ^t << in_shift) in integers, sent to the learner's third factor."""

    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=24)
    signal: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=48)

    def run_spk(self) -> None:
        c = self.proc_params["constants"]
        current = self.a_in.recv().astype(np.int64)
        self.signal = _leaky_integrate(self.signal, int(c["decay_mant"]), int(c["decay_bits"]), current,
                                       int(c["in_shift"]))
        if np.abs(self.signal).max(initial=0) >= 2**31:  # the port carries int32
            raise OverflowError("signal filter: |L| beyond the 32-bit message")
        self.s_out.send(self.signal.astype(np.int32))
