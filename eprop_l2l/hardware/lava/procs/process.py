"""Lava Processes of the e-prop learning network (their ProcessModels are in :mod:`.models`, the same folder).

This folder holds only Processes and their models: Lava's compiler imports every ``.py`` file in the folder of
the module that defines a Process when it looks for models.

The learner neuron runs one trial schedule (Lava step ``s`` counts from 1; ``T`` = demonstration length, ``D`` =
the lag of the learning signal, 0 when it is replayed, 2 when the error module runs in Lava):

=======================  ===============================================================================
Lava step ``s``          what the learner neuron does
=======================  ===============================================================================
1                        idle (our step 0: v = 0)
2 … T+1                  demonstration dynamics, our step t = s − 1 (ψ^t kept for D steps)
2+D … T+1+D              third factor y2 = c·ψ^t·L^t for t = s − 1 − D (L^t arrives at this step)
T+2+D                    bap = 1 and y2 = 0: the learning engine moves the tag into the weights; state reset
T+3+D                    idle (test trial step 0)
T+4+D … 2T+3+D           test trial step t = s − T − 3 − D with the updated weights (y2 = 0)
=======================  ===============================================================================

Our step t runs at Lava step t+1 because a Dense connection delivers at step s what its input sent at s−1
(the input source emits x^t at Lava step t).
"""

from lava.magma.core.process.neuron import LearningNeuronProcess
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class EpropLearnerNeuron(LearningNeuronProcess, AbstractProcess):
    """LIF neurons of the learning network with e-prop's post-synaptic factor and third factor.

    Dynamics (our convention, "new" input scaling ``s``): ``r^t = clip(r^{t-1} + n_ref·z^{t-1} − 1, 0, n_ref)``,
    ``v^t = α v^{t-1} + s·I^t − v_th z^{t-1}``, ``z^t = [v^t > v_th and r^t = 0]``,
    ``ψ^t = (γ/v_th)·max(0, 1 − |v^t − v_th|/v_th)`` (0 while ``r^t > 0``). ``I^t`` is what arrives on
    ``a_in``; with ``shadow`` synapses the test trial reads ``a_in_plastic`` instead (the learned copies).
    It sends ``y2 = c·ψ·L`` on ``s_out_y2`` (signed; ``L`` arrives on ``a_third_factor_in``), one
    back-propagating action potential on ``s_out_bap`` after the demonstration, and, with ``shadow`` synapses,
    its spikes delayed by D+1 steps on ``s_out_learn`` (the presynaptic input of the learning copy of W_rec).
    An ALIF learner (``constants["model"] = "alif"``, float model) adapts its threshold by β_j·a^t and sends, with
    y2, the factors of the per-synapse ε_a update: ``y3 = c_a·β_j ψ`` and ``y1 = c_a·(1 − ρ + β_j ψ)``.

    ``constants`` (a dict, passed to the models as a process parameter) holds the neuron constants and, for the
    fixed-point model, the integer formats (see :mod:`eprop_l2l.hardware.lava.network`). The models record the
    spikes of every step and ψ, y2, L of the demonstration and write them to ``constants["record_path"]``
    (``.npz``) at the last step: reading a 400 × 1003 record back through ``Var.get()`` takes tens of seconds in
    Lava's CPU runtime (one channel message per element).
    """

    def __init__(self, *, shape: tuple, learning_rule, constants: dict, n_demo: int, delay: int = 0,
                 shadow: bool = False, name: str | None = None):
        super().__init__(shape=shape, learning_rule=learning_rule, constants=constants, n_demo=n_demo, delay=delay,
                         shadow=shadow, name=name)
        self.a_in = InPort(shape=shape)
        self.a_in_plastic = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.s_out_learn = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.ref = Var(shape=shape, init=0)
        self.z = Var(shape=shape, init=0)
        self.a = Var(shape=shape, init=0)  # ALIF learners' threshold adaptation (0 for LIF)


class ModuleNeuron(AbstractProcess):
    """LIF or ALIF neurons of the error module (its own constants; ALIF: the threshold adaptation ``a``), no
    learning."""

    def __init__(self, *, shape: tuple, constants: dict, name: str | None = None):
        super().__init__(shape=shape, constants=constants, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.a = Var(shape=shape, init=0)
        self.ref = Var(shape=shape, init=0)
        self.z = Var(shape=shape, init=0)


class SignalFilter(AbstractProcess):
    """The learning signal ``L^t = d·L^{t-1} + a^t`` (``a^t`` = em_proj·ζ^t arriving on ``a_in``), sent every step
    on ``s_out`` (graded) to the learner's third-factor input."""

    def __init__(self, *, shape: tuple, decay: float, constants: dict | None = None, name: str | None = None):
        # constants: the fixed-point model's integers (decay_mant, decay_bits, in_shift); unused in float
        super().__init__(shape=shape, decay=decay, constants=constants or {}, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.signal = Var(shape=shape, init=0)


class Readout(AbstractProcess):
    """The learner's leaky readout (e-prop 1's output): ``y^t = κ·y^{t-1} + s·a^t + b`` with ``a^t`` = W^out·z^t
    arriving on ``a_in``, sent every step on ``s_out`` (graded). ``constants``: ``kappa``, ``input_scale``, ``bias``
    (a list, zeros without a readout bias)."""

    def __init__(self, *, shape: tuple, constants: dict, name: str | None = None):
        super().__init__(shape=shape, constants=constants, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.y = Var(shape=shape, init=0)


class OutputError(AbstractProcess):
    """e-prop 1's output error ``err^t = mask^t·(y^t − y*^t)``: the readout's y on ``y_in``, the target y* on
    ``target_in`` and the mask on ``mask_in`` (both inputs of the task), sent every step on ``s_out`` (graded) to
    the feedback projection B."""

    def __init__(self, *, shape: tuple, name: str | None = None):
        super().__init__(shape=shape, name=name)
        self.y_in = InPort(shape=shape)
        self.target_in = InPort(shape=shape)
        self.mask_in = InPort(shape=(1,))
        self.s_out = OutPort(shape=shape)
