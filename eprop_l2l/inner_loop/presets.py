"""Ready-made e-prop 1 experiments of Bellec et al. 2020 (Fig. S7 pattern generation, Fig. 3 evidence
accumulation), as used by the demo, the learning tests and the benchmarks. Parameters follow
``docs/hyperparameters.md``; where a value differs from the paper it says why."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..cells.alif import ALIF
from ..cells.lif import LIF
from ..cells.network import RecurrentNetwork
from ..cells.readout import LeakyReadout
from ..error_modules.feedback import Feedback
from ..task_families import TaskBatch, make_task_family
from .regularization import RateRegularizer
from .train import RuleTraining, train_with_rule

STEP_MS = 1.0  # the tutorials' recipes are written for 1-ms steps


@dataclass
class Eprop1Setup:
    network: RecurrentNetwork
    params: dict
    family: object
    source: Feedback
    source_params: dict
    regularizer: RateRegularizer
    training: RuleTraining
    generator: torch.Generator = field(repr=False)
    task: TaskBatch | None = None  # the one task trained on, for single-task experiments


def pattern_generation(feedback: str = "random", seed: int = 0, n_iterations: int = 150, lr: float = 3e-3,
                       n_rec: int = 100, n_steps: int = 1000) -> Eprop1Setup:
    """100 LIF (τ_m 30 ms, v_th 0.03 with the (1−α) input scaling of the tutorial, no refractoriness), frozen
    50 Hz Poisson input, readout τ 30 ms with (1−κ) scaling, one sum-of-4-sines target, rate regulariser
    300 at 10 Hz. Adam lr 3e-3 instead of the tutorial's plain GD lr 1e-4 × 2000 iterations: the same fit in
    ~10× fewer iterations."""
    generator = torch.Generator().manual_seed(seed)
    family = make_task_family("sines", n_steps=n_steps, input_seed=seed, dt_ms=STEP_MS)
    cell = LIF(n_in=family.n_in, n_rec=n_rec, tau_m=30.0, v_th=0.03, n_ref=0, input_scaling="old",
               dt_ms=STEP_MS)
    network = RecurrentNetwork(cell, LeakyReadout(n_rec, family.n_out, tau_out=30.0, input_scaling="old",
                                                  dt_ms=STEP_MS))
    params = network.init_params(generator)
    source = Feedback(feedback, n_rec, family.n_out)
    source_params = source.init_params(generator)
    task = family.sample(1, generator)
    return Eprop1Setup(network, params, family, source, source_params,
                       RateRegularizer(300.0, 10.0, dt_ms=STEP_MS),
                       RuleTraining(lr=lr, n_iterations=n_iterations), generator, task)


def evidence_accumulation(feedback: str = "symmetric", seed: int = 0, n_iterations: int = 200, lr: float = 5e-3,
                          batch_size: int = 64, **task) -> Eprop1Setup:
    """50 LIF + 50 ALIF (τ_a 2 s, β 0.0174 in the raw-a convention), τ_m 20 ms, v_th 0.6, n_ref 5; 40 input
    neurons (left, right, recall, background); readout τ 20 ms; regulariser 1.0 at 10 Hz; Adam lr 5e-3."""
    generator = torch.Generator().manual_seed(seed)
    family = make_task_family("evidence", **task, dt_ms=STEP_MS)
    cell = ALIF(n_in=family.n_in, n_rec=100, tau_m=20.0, v_th=0.6, n_ref=5, tau_a=2000.0, beta=0.0174,
                n_adaptive=50, dt_ms=STEP_MS)
    network = RecurrentNetwork(cell, LeakyReadout(100, family.n_out, tau_out=20.0, dt_ms=STEP_MS))
    params = network.init_params(generator)
    source = Feedback(feedback, 100, family.n_out)
    return Eprop1Setup(network, params, family, source, source.init_params(generator),
                       RateRegularizer(1.0, 10.0, dt_ms=STEP_MS),
                       RuleTraining(lr=lr, n_iterations=n_iterations, batch_size=batch_size), generator)


def train_setup(setup: Eprop1Setup, callback=None, plastic=("w_in", "w_rec", "w_out", "b_out")) -> list[dict]:
    """Run the setup's training (its ``params`` and ``source_params`` are updated in place)."""
    return train_with_rule(setup.network, setup.params, setup.family, setup.source, setup.source_params,
                           setup.training, setup.generator, setup.regularizer, plastic=plastic, callback=callback,
                           fixed_batch=setup.task)
