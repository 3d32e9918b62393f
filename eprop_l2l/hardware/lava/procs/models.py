"""Floating-point and fixed-point ProcessModels of :class:`.process.EpropLearnerNeuron` (CPU simulation).

Both run the same schedule (see :mod:`.process`) and differ only in their arithmetic:

* ``floating_pt``: float64 membrane, float y2 = c·ψ·L.
* ``fixed_pt``: integer membrane ``v`` in units of ``2^v_exp`` (int64), integer currents from the fixed-point
  Dense models (units ``2^in_exp``, shifted left by ``in_shift`` into membrane units), the decay α as a
  24-bit fraction (``v ← (v·α_m + 2^23) >> 24``), an integer threshold, ψ from the integer membrane, the replayed
  learning signal as an integer in units of ``2^-l_exp``, and y2 = round(k_y·ψ_int·L_int) saturated to the
  signed ``y_bits`` range (nearest, or stochastic with the neuron's own seeded generator).
"""

import numpy as np
from lava.magma.core.decorator import implements, requires, tag
from lava.magma.core.model.py.neuron import LearningNeuronModelFixed, LearningNeuronModelFloat
from lava.magma.core.model.py.ports import PyInPort, PyOutPort
from lava.magma.core.model.py.type import LavaPyType
from lava.magma.core.resources import CPU
from lava.magma.core.sync.protocols.loihi_protocol import LoihiProtocol

# absolute import: Lava's compiler also executes this file as a top-level module while it looks for models
from eprop_l2l.hardware.lava.procs.process import EpropLearnerNeuron

IDLE, DEMO, APPLY, TEST = range(4)


class _Schedule:
    """The trial schedule shared by both models (Lava step ``s`` counts from 1)."""

    def _phase(self, s: int) -> tuple[int, int]:
        n = int(self.proc_params["n_demo"])
        if 2 <= s <= n + 1:
            return DEMO, s - 1
        if s == n + 2:
            return APPLY, 0
        if n + 4 <= s <= 2 * n + 3:
            return TEST, s - n - 3
        return IDLE, 0

    def run_spk(self) -> None:
        s = int(self.time_step)
        current = self.a_in.recv()
        signal = self.a_third_factor_in.recv()
        phase, _ = self._phase(s)
        n = self.v.shape[0]
        bap = np.zeros(n, dtype=bool)
        y2 = np.zeros(n)
        if phase in (DEMO, TEST):
            z, psi = self._advance(current)
            if phase == DEMO:
                y2 = self._third_factor(psi, signal)
                self.psi_rec[:, s - 1] = self._psi_value(psi)
                self.y2_rec[:, s - 1] = y2
            self.z_rec[:, s - 1] = z
        else:
            z = np.zeros(n, dtype=bool)
            if phase == APPLY:
                bap[:] = True
                self._reset()
        self.s_out.send(self._spikes(z))
        self.s_out_bap.send(bap)
        self.s_out_y2.send(self._y2(y2))
        # y1 and y3 are not used by the rule; their connection ports read zeros when unconnected


@implements(proc=EpropLearnerNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("floating_pt")
class PyEpropLearnerNeuronFloat(_Schedule, LearningNeuronModelFloat):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, float)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, float)
    v: np.ndarray = LavaPyType(np.ndarray, float)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)
    z_rec: np.ndarray = LavaPyType(np.ndarray, float)
    psi_rec: np.ndarray = LavaPyType(np.ndarray, float)
    y2_rec: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        c = proc_params["constants"]
        self.alpha, self.v_th, self.n_ref = float(c["alpha"]), float(c["v_th"]), int(c["n_ref"])
        self.gamma, self.scale, self.c_y = float(c["gamma_pd"]), float(c["input_scale"]), float(c["y_scale"])
        self.surrogate = c["surrogate"]

    def _advance(self, current):
        z_prev = self.z.astype(bool)
        if self.n_ref > 0:
            self.ref = np.clip(self.ref + self.n_ref * z_prev - 1, 0, self.n_ref)
        self.v = self.alpha * self.v + self.scale * current - self.v_th * z_prev
        x = (self.v - self.v_th) / self.v_th
        z = (x > 0) & (self.ref == 0)
        if self.surrogate == "triangle":
            psi = (self.gamma / self.v_th) * np.maximum(0.0, 1.0 - np.abs(x))
        else:
            psi = (self.gamma / self.v_th) / (1.0 + np.abs(x)) ** 2
        psi = np.where(self.ref > 0, 0.0, psi)
        self.z = z.astype(int)
        return z, psi

    def _third_factor(self, psi, signal):
        return self.c_y * psi * signal

    @staticmethod
    def _psi_value(psi):
        return psi

    def _reset(self):
        self.v = np.zeros_like(self.v)
        self.ref = np.zeros_like(self.ref)
        self.z = np.zeros_like(self.z)

    @staticmethod
    def _spikes(z):
        return z.astype(float)

    @staticmethod
    def _y2(y2):
        return y2


@implements(proc=EpropLearnerNeuron, protocol=LoihiProtocol)
@requires(CPU)
@tag("fixed_pt")
class PyEpropLearnerNeuronFixed(_Schedule, LearningNeuronModelFixed):
    a_in: PyInPort = LavaPyType(PyInPort.VEC_DENSE, np.int32, precision=24)
    s_out: PyOutPort = LavaPyType(PyOutPort.VEC_DENSE, np.int32, precision=1)
    v: np.ndarray = LavaPyType(np.ndarray, np.int64, precision=48)
    ref: np.ndarray = LavaPyType(np.ndarray, int)
    z: np.ndarray = LavaPyType(np.ndarray, int)
    z_rec: np.ndarray = LavaPyType(np.ndarray, float)
    psi_rec: np.ndarray = LavaPyType(np.ndarray, float)
    y2_rec: np.ndarray = LavaPyType(np.ndarray, float)

    def __init__(self, proc_params):
        super().__init__(proc_params)
        c = proc_params["constants"]
        self.alpha_m, self.v_th_int, self.n_ref = int(c["alpha_mant"]), int(c["v_th_int"]), int(c["n_ref"])
        self.in_shift, self.k_y = int(c["in_shift"]), float(c["k_y"])
        self.y_min, self.y_max = int(c["y_min"]), int(c["y_max"])
        self.psi_unit = float(c["psi_unit"])  # ψ = ψ_int·psi_unit (for the record only)
        self.stochastic = c["rounding"] == "stochastic"
        self.rng = np.random.default_rng(int(c["seed"]))

    def _advance(self, current):
        z_prev = self.z.astype(bool)
        if self.n_ref > 0:
            self.ref = np.clip(self.ref + self.n_ref * z_prev - 1, 0, self.n_ref)
        v = self.v.astype(np.int64)
        v = ((v * self.alpha_m + (1 << 23)) >> 24) + (current.astype(np.int64) << self.in_shift)
        v = v - self.v_th_int * z_prev.astype(np.int64)
        self.v = v
        z = (v > self.v_th_int) & (self.ref == 0)
        psi_int = np.maximum(0, self.v_th_int - np.abs(v - self.v_th_int))
        psi_int = np.where(self.ref > 0, 0, psi_int)
        self.z = z.astype(int)
        return z, psi_int

    def _third_factor(self, psi_int, signal):
        y = self.k_y * psi_int.astype(np.float64) * signal.astype(np.float64)
        y = np.floor(y + self.rng.random(y.shape)) if self.stochastic else np.round(y)
        return np.clip(y, self.y_min, self.y_max)

    def _psi_value(self, psi_int):
        return psi_int * self.psi_unit

    def _reset(self):
        self.v = np.zeros_like(self.v)
        self.ref = np.zeros_like(self.ref)
        self.z = np.zeros_like(self.z)

    @staticmethod
    def _spikes(z):
        return z.astype(np.int32)

    @staticmethod
    def _y2(y2):
        return y2.astype(np.int32)
