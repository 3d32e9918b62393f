"""The e-prop learner neuron as a Lava Process (its ProcessModels are in :mod:`.models`, the same folder).

This folder holds only the Process and its models: Lava's compiler imports every ``.py`` file in the folder of
the module that defines a Process when it looks for models.

One trial schedule is built into the neuron (Lava step ``s`` counts from 1; ``T`` = demonstration length):

=====================  ===================================================================================
Lava step ``s``        what the neuron does
=====================  ===================================================================================
1                      idle (our step 0: v = 0, nothing sent)
2 … T+1                demonstration step t = s − 1: dynamics, ψ^t, third factor y2 = c·ψ^t·L^t
T+2                    bap = 1 and y2 = 0: the learning engine moves the tag into the weights; state reset
T+3                    idle (test trial step 0)
T+4 … 2T+3             test trial step t = s − T − 3 with the updated weights (y2 = 0, no learning)
=====================  ===================================================================================

Our step t runs at Lava step t+1 because a Dense connection delivers at step s what its input sent at s−1
(the input source emits x^t at Lava step t).
"""

from __future__ import annotations

import numpy as np
from lava.magma.core.process.neuron import LearningNeuronProcess
from lava.magma.core.process.ports.ports import InPort, OutPort
from lava.magma.core.process.process import AbstractProcess
from lava.magma.core.process.variable import Var


class EpropLearnerNeuron(LearningNeuronProcess, AbstractProcess):
    """LIF neurons of the learning network with e-prop's post-synaptic factor and third factor.

    Dynamics (our convention, "new" input scaling ``s``): ``r^t = clip(r^{t-1} + n_ref·z^{t-1} − 1, 0, n_ref)``,
    ``v^t = α v^{t-1} + s·I^t − v_th z^{t-1}`` (``I^t`` = everything arriving on ``a_in``),
    ``z^t = [v^t > v_th and r^t = 0]``, ``ψ^t = (γ/v_th)·max(0, 1 − |v^t − v_th|/v_th)`` (0 while ``r^t > 0``).
    Every demonstration step the neuron sends ``y2 = c·ψ^t·L^t`` on ``s_out_y2`` (signed; ``L^t`` arrives on
    ``a_third_factor_in``); after the demonstration it sends one back-propagating action potential on
    ``s_out_bap`` that applies the accumulated tag.

    ``constants`` (a dict, passed to the models as a process parameter) holds the neuron constants and, for the
    fixed-point model, the integer formats: see :mod:`eprop_l2l.hardware.lava.network`.
    """

    def __init__(self, *, shape: tuple, learning_rule, constants: dict, n_demo: int, name: str | None = None):
        n_steps = 2 * n_demo + 3
        super().__init__(shape=shape, learning_rule=learning_rule, constants=constants, n_demo=n_demo, name=name)
        self.a_in = InPort(shape=shape)
        self.s_out = OutPort(shape=shape)
        self.v = Var(shape=shape, init=0)
        self.ref = Var(shape=shape, init=0)
        self.z = Var(shape=shape, init=0)
        # records, read back after the run: spikes of every Lava step, ψ and y2 of every demonstration step
        self.z_rec = Var(shape=(shape[0], n_steps), init=np.zeros((shape[0], n_steps)))
        self.psi_rec = Var(shape=(shape[0], n_steps), init=np.zeros((shape[0], n_steps)))
        self.y2_rec = Var(shape=(shape[0], n_steps), init=np.zeros((shape[0], n_steps)))
