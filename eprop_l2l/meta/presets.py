"""Learning-to-learn presets for the two-joint arm (spec B2, B6).

* ``paper`` — the authors' e-prop 2 setting: 400 LIF learner, 300 LIF error module, 100 tasks per batch, 500-ms
  trials, Adam 1e-3, inner η = 1e-4, readout initialised at 0.05·N(0,1)/√N. Meant for a GPU.
* ``cpu`` — reduced sizes for a 2-core CPU (100 / 60 neurons, 16 tasks). Differences from ``paper`` and why:
  a larger readout initialisation (2.0 instead of 0.05: with 100 neurons the meta-learner otherwise spends
  thousands of steps only growing the readout to the rad/s scale of the targets), a larger meta-learned inner
  learning rate (initial 1e-2) and Adam 3e-3.
* ``gpu`` — the ``paper`` sizes (400 / 300 neurons, 100 tasks) with the ``cpu`` preset's meta-optimisation
  (readout initialisation 2.0, inner η initialised at 1e-2, Adam 3e-3): what learns within minutes on one GPU.
* ``small`` — 40 / 30 neurons, the full 500-ms task: a minute-long learning test.
* ``tiny`` — seconds-long runs for tests.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cells import LIF, LeakyReadout, RecurrentNetwork
from ..error_modules.learned import LearnedErrorModule
from ..errors import require_choice
from ..inner_loop.regularization import RateRegularizer
from ..task_families.arm import ArmSines
from .learner import MetaLearner
from .objectives import arm_outer_loss
from .trainer import MetaTraining


@dataclass(frozen=True)
class ArmPreset:
    n_learner: int
    n_module: int
    batch_size: int
    lr: float
    inner_lr: float
    readout_init: float
    n_steps: int = 500
    n_pop_per_dim: int = 100
    reg: float = 200.0  # (c/2)·Σ(f − f*)² with c = 200: the authors' 100·Σ(f − f*)²
    v_th: float = 0.4


PRESETS = {
    "paper": ArmPreset(400, 300, 100, 1e-3, 1e-4, 0.05),
    "cpu": ArmPreset(100, 60, 16, 3e-3, 1e-2, 2.0),
    "gpu": ArmPreset(400, 300, 100, 3e-3, 1e-2, 2.0),
    "small": ArmPreset(40, 30, 16, 3e-3, 1e-2, 2.0, n_pop_per_dim=50),
    "tiny": ArmPreset(20, 12, 4, 3e-3, 1e-3, 1.0, n_steps=100, n_pop_per_dim=10),
}


def arm_learner(preset: str = "cpu", fast_loop: bool = True) -> tuple[MetaLearner, ArmSines, MetaTraining]:
    require_choice("preset", preset, tuple(PRESETS))
    p = PRESETS[preset]
    family = ArmSines(n_steps=p.n_steps, n_pop_per_dim=p.n_pop_per_dim)
    network = RecurrentNetwork(LIF(family.n_in, p.n_learner, v_th=p.v_th, n_ref=5),
                               LeakyReadout(p.n_learner, 2, tau_out=20.0, bias=False, init_scale=p.readout_init))
    module_cell = LIF(family.n_context + p.n_learner + family.n_in, p.n_module, v_th=p.v_th, n_ref=5)
    module = LearnedErrorModule(module_cell, p.n_learner, family.n_context, family.n_in, fast_loop=fast_loop)
    learner = MetaLearner(network, module, inner_lr=p.inner_lr, learn_inner_lr=True, outer_loss=arm_outer_loss,
                          network_rate=RateRegularizer(p.reg, 20.0), module_rate=RateRegularizer(p.reg, 10.0),
                          fast_loop=fast_loop)
    return learner, family, MetaTraining(batch_size=p.batch_size, lr=p.lr, lr_decay=0.99, lr_decay_every=500)
