"""The configuration schema of a meta-training run: typed dataclasses with documented defaults, used by
OmegaConf as structured configs (unknown keys and wrong types are refused when YAML and overrides are merged
onto them) and, after conversion, by :mod:`.build` (impossible values are refused by the components, each
error naming its dotted key). Every value a user may change lives here; the YAML files in ``configs/`` only
choose among them (experiment presets, ``task/``, ``model/``, ``inner/``, ``error_module/``).

Defaults are the authors' e-prop 2 setting (``experiment=paper``; docs/hyperparameters.md). Where a key maps
to a component's field, its default is the component's, read from the constructor's signature with
:func:`component_default` (never written here a second time); the few that are the e-prop 2 recipe's and not the
component's (``v_th``, ``readout_init``, the sizes) say so where they are set (docs/architecture.md, "Where a
default lives").
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

from ..cells.alif import ALIF
from ..cells.cuba_lif import CubaLIF
from ..cells.readout import LeakyReadout
from ..cells.spiking import SpikingNeurons
from ..error_modules.learned import LearnedErrorModule
from ..inner_loop.device import PCMDevice
from ..inner_loop.objectives import InnerObjective
from ..meta.evaluate import evaluate_one_shot
from ..meta.learner import RECIPE_RATES, MetaLearner
from ..meta.trainer import MetaTraining
from ..task_families.arm import ArmSines
from ..task_families.scorbot import ScorbotBrownian
from ..units import DEFAULT_STEP_MS


def component_default(component, name: str):
    """The default ``component`` (a class or function) states for its parameter ``name``: the one place it lives.
    OmegaConf's structured configs need concrete values, and this is one, read when the schema is defined."""
    parameter = inspect.signature(component).parameters.get(name)
    if parameter is None or parameter.default is inspect.Parameter.empty:
        raise TypeError(f"{component.__qualname__} has no default for {name!r} (the schema reads its defaults from "
                        "the components)")
    return parameter.default


_NETWORK_RATE, _MODULE_RATE = RECIPE_RATES["network_rate"], RECIPE_RATES["module_rate"]  # (coefficient, Hz)


@dataclass
class TaskConfig:
    # arm_sines (e-prop 2) | arm_brownian (natural e-prop's planar arm) | scorbot_brownian (natural e-prop's
    # ED-Scorbot, docs/natural_eprop.md); docs/equations.md
    family: str = "arm_sines"
    n_steps: int = component_default(ArmSines, "n_steps")  # trial length in steps: the trial lasts n_steps·dt_ms ms
    # population code of the target for the error module: neurons per joint
    n_pop_per_dim: int = component_default(ArmSines, "n_pop_per_dim")
    # how the planar arms code the target path for the error module: population (e-prop 2's Gaussian-tuned
    # rates, n_pop_per_dim per coordinate) | binary (natural e-prop's position code, code_bits per coordinate;
    # the Scorbot always codes its path so)
    context_code: str = component_default(ArmSines, "context_code")
    code_bits: int = component_default(ArmSines, "code_bits")
    # scorbot_brownian only: the target velocities of the clipped target path (true) or the recipe's unclipped
    # ones (false), docs/natural_eprop.md
    consistent_targets: bool = component_default(ScorbotBrownian, "consistent_targets")
    # Simulation time step in ms; every time constant, rate and duration is converted with it (membrane,
    # adaptation, readout and learning-signal decays exp(-dt/τ), rate targets in spikes per step, the clock
    # period and the Brownian family's window in steps, the population code's spike probability, the arm's
    # kinematics). It must divide the arm clock's 10-ms period. Counts stay counts: n_steps, model.n_ref and
    # error_module.n_ref are numbers of steps.
    dt_ms: float = DEFAULT_STEP_MS


@dataclass
class CellConfig:
    """One recurrent population — the learning network or the error module: the same keys, the same meanings."""

    cell: str = "lif"  # lif | alif | cuba_lif (current-based LIF) (| lstm for the error module)
    n_rec: int = 400  # the recipe's size (a cell has no default size)
    # alif: how many neurons adapt (the last ones); null = all, 0 = none
    n_adaptive: int | None = component_default(ALIF, "n_adaptive")
    tau_m: float = component_default(SpikingNeurons, "tau_m")  # ms
    # The e-prop 2 recipe's threshold, which every config-built run uses: 0.4 for the learning network and the
    # error module in the authors' tutorial_eprop2.py (eprop-spec.md, [C1]). The cells' own default, 0.6, is the
    # other recipes' (natural e-prop's trainee, evidence accumulation, ChFrenkel/eprop-PyTorch) and stays the
    # Python API's: a cell built without v_th (scripts, tests) computes what it always did.
    v_th: float = 0.4
    n_ref: int = component_default(SpikingNeurons, "n_ref")  # refractory steps (n_ref·dt_ms ms)
    tau_a: float = component_default(ALIF, "tau_a")  # ms, alif only
    beta: float = component_default(ALIF, "beta")  # alif only
    tau_syn: float = component_default(CubaLIF, "tau_syn")  # ms, cuba_lif only: the synaptic current's decay
    # the rate regulariser (c/2)·Σ_j (f_j − f*)² of the learning network, MetaLearner's recipe (RECIPE_RATES):
    # c = 200 is the authors' 100·Σ(f − f*)², f* = 20 Hz
    rate_target_hz: float = _NETWORK_RATE[1]
    rate_coefficient: float = _NETWORK_RATE[0]


@dataclass
class ModelConfig(CellConfig):
    """The learning network: recurrent spiking cell and leaky readout to the two joint velocities."""

    tau_out: float = component_default(LeakyReadout, "tau_out")  # ms, readout
    # W_out ~ readout_init · N(0, 1)/√n_rec: the e-prop 2 recipe's 0.05 (LeakyReadout's init_scale is 1, the
    # unscaled initialisation of the e-prop 1 experiments)
    readout_init: float = 0.05


@dataclass
class ErrorModuleConfig(CellConfig):
    """Where the learning signals come from: a learned recurrent module (e-prop 2 / natural e-prop) or the
    output error broadcast through a meta-learned feedback matrix (e-prop 1 inside learning-to-learn). Its
    population's keys are those of :class:`CellConfig`."""

    n_rec: int = 300  # the recipe's size
    rate_target_hz: float = _MODULE_RATE[1]  # MetaLearner's recipe for the error module: 10 Hz
    rate_coefficient: float = _MODULE_RATE[0]
    kind: str = "learned"  # learned | feedback
    feedback: str = "random"  # kind=feedback: random | symmetric
    use_context: bool = component_default(LearnedErrorModule, "use_context")  # the population-coded target movement
    # the learning network's spikes (e-prop 2: yes; natural e-prop: no)
    use_spikes: bool = component_default(LearnedErrorModule, "use_spikes")
    use_inputs: bool = component_default(LearnedErrorModule, "use_inputs")  # the clock input
    # the hand path the learner's own output produces through the arm, in the target path's population code
    use_produced_path: bool = component_default(LearnedErrorModule, "use_produced_path")
    signal_tau: float = component_default(LearnedErrorModule, "signal_tau")  # ms; leak of the learning signal filter
    # Ψ ~ projection_scale · N(0, 1)/√n_rec
    projection_scale: float = component_default(LearnedErrorModule, "projection_scale")


@dataclass
class InnerConfig:
    """The inner loop: how the demonstration trial changes the learning network."""

    # eprop (eligibility traces × learning signal) | bptt (MAML-style gradient step) | ostl (OSTL's gradient
    # step: the neuron-internal influence × the exact readout gradient; no lateral credit)
    rule: str = component_default(MetaLearner, "inner_rule")
    lr: float = component_default(MetaLearner, "inner_lr")  # the inner learning rate; with learn_lr its start
    learn_lr: bool = component_default(MetaLearner, "learn_inner_lr")  # meta-learn the inner rate (as its log)
    # demonstrations / updates before the test trial (0 = no adaptation)
    n_updates: int = component_default(MetaLearner, "n_inner_updates")
    plastic: list[str] = field(default_factory=lambda: list(component_default(MetaLearner, "plastic")))
    # what the demonstration's error is measured on (docs/equations.md, "Inner objectives"): motor (y − y*, the
    # target joint velocities) | hand (the Cartesian deviation p − p* of the produced hand path, for feedback
    # matrices) | hand_gradient (∂E_cart/∂y through the arm's Jacobian: symmetric feedback, BPTT)
    objective: str = component_default(InnerObjective, "kind")
    # filter the eligibility traces with the readout's κ (e-prop 1 as in Bellec et al. 2020: symmetric feedback
    # is then exact where e-prop is); false: κ = 0, L applied to e directly (e-prop 2, MetaLearner's kappa)
    filter_traces: bool = component_default(MetaLearner, "kappa") > 0
    # spiking loops with the hand-written backward (same values and gradients)
    fast_loop: bool = component_default(MetaLearner, "fast_loop")
    # arithmetic of the inner update: float | loihi (Loihi 2's learning-engine integers, hardware-aware
    # meta-training with straight-through gradients) | wide (the same integer pipeline, wide enough to be exact)
    precision: str = component_default(MetaLearner, "precision")


@dataclass
class DeviceConfig:
    """Where the trainee's weights live (inner_loop/device.py, docs/natural_eprop.md): none (exact floats) or pcm
    (a phase-change-memory crossbar: programming noise, drift and read noise, ΔW at the device's resolution),
    in meta-training (hardware-aware) and evaluation alike."""

    kind: str = "none"  # none | pcm
    # ΔW is programmed in multiples of this (0: not rounded)
    update_step: float = component_default(PCMDevice, "update_step")
    programming_noise: bool = component_default(PCMDevice, "programming_noise")
    drift: bool = component_default(PCMDevice, "drift")
    read_noise: bool = component_default(PCMDevice, "read_noise")
    # how often read noise is drawn: trial (once per trial and task) | step (at every time step, as the authors'
    # code; the trials then run step by step, slower)
    read_every: str = component_default(PCMDevice, "read_every")


@dataclass
class OptimConfig:
    """The outer loop (meta-training): Adam with clipping and step decay, periodic validation. Every default is
    :class:`~eprop_l2l.meta.trainer.MetaTraining`'s."""

    n_iterations: int = component_default(MetaTraining, "n_iterations")
    batch_size: int = component_default(MetaTraining, "batch_size")  # tasks per meta-iteration, all processes
    lr: float = component_default(MetaTraining, "lr")
    lr_decay: float = component_default(MetaTraining, "lr_decay")
    lr_decay_every: int = component_default(MetaTraining, "lr_decay_every")
    clip_norm: float = component_default(MetaTraining, "clip_norm")  # 0 disables clipping
    validate_every: int = component_default(MetaTraining, "validate_every")
    n_validation_tasks: int = component_default(MetaTraining, "n_validation_tasks")
    validation_seed: int = component_default(MetaTraining, "validation_seed")
    seed: int = component_default(MetaTraining, "seed")  # the training task stream and the initial meta-parameters
    max_nonfinite: int = component_default(MetaTraining, "max_nonfinite")  # non-finite steps in a row, then abort
    # CPU minutes of the whole training, resumes included; 0 = none
    budget_minutes: float = component_default(MetaTraining, "budget_minutes")
    # steps: ×lr_decay every lr_decay_every | budget: lr·lr_end^(budget fraction)
    lr_schedule: str = component_default(MetaTraining, "lr_schedule")
    lr_end: float = component_default(MetaTraining, "lr_end")  # lr_schedule=budget: the fraction of lr left


@dataclass
class EvalConfig:
    n_tasks: int = component_default(evaluate_one_shot, "n_tasks")
    seed: int = component_default(evaluate_one_shot, "seed")  # held-out stream, separate from training and validation
    batch_size: int = component_default(evaluate_one_shot, "batch_size")
    figures: bool = component_default(evaluate_one_shot, "example")  # the median task's one-shot figure
    # meta-parameters reset to their initialisation (seed optim.seed) before evaluating, by name prefix:
    # [em_] is the "error module frozen at its initialisation" ablation
    reinit: list[str] = field(default_factory=list)


@dataclass
class RunConfig:
    dir: str = ""  # run directory; empty: runs/<experiment>/<timestamp>. An existing run is resumed.
    checkpoint_every: int = 100
    keep: int = 3  # checkpoints kept
    minutes: float = 0.0  # wall-clock budget of this invocation; 0 = none
    device: str = "cpu"  # cpu | cuda | cuda:N
    threads: int = 0  # torch intra-op threads; 0 = torch's default
    progress: bool = True
    evaluate: bool = True  # one-shot evaluation at the end of training
    init_from: str = ""  # a run directory or checkpoint whose meta-parameters start a NEW run (fine-tuning)
    # refuse before anything is written when the estimated memory of training (per-task fast weights
    # batch·n_rec², trial activations batch·n_steps·neurons) or evaluation exceeds what the machine has
    memory_check: bool = True


@dataclass
class WandbConfig:
    mode: str = "offline"  # offline (sync later with `wandb sync`) | online | disabled
    project: str = "eprop-l2l"
    entity: str | None = None
    name: str | None = None  # default: the run directory's name
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # mode=online: seconds to reach the W&B server; without an API key, the network or within this time the run
    # is logged offline instead (one warning line; upload later with `wandb sync`)
    timeout_s: float = 20.0


@dataclass
class DistributedConfig:
    backend: str = "auto"  # auto (nccl on cuda, gloo on cpu) | gloo | nccl
    # seconds to wait for all WORLD_SIZE processes to join, and for any one collective operation (a process
    # that does not show up, or hangs, ends the run with one line instead of a wait forever)
    timeout_s: float = 120.0


@dataclass
class TrainConfig:
    experiment: str = "paper"  # name of the preset the config was composed from (recorded, not used)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    error_module: ErrorModuleConfig = field(default_factory=ErrorModuleConfig)
    inner: InnerConfig = field(default_factory=InnerConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    run: RunConfig = field(default_factory=RunConfig)
    wandb: WandbConfig = field(default_factory=WandbConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)


# Sections that define what is trained: a run directory may be resumed only with the same values here.
MODEL_SECTIONS = ("task", "model", "error_module", "inner", "device")

# Upper bounds of sizes and counts, checked before anything is built, so that a typo (one zero too many) is a
# one-line refusal and never an allocator failure, an integer overflow or a run that cannot end; the memory a
# configuration needs is checked against the machine as well (run.memory_check).
LIMITS = {
    "task.n_steps": 1_000_000, "task.n_pop_per_dim": 100_000, "model.n_rec": 100_000, "model.n_ref": 1_000_000,
    "error_module.n_rec": 100_000, "error_module.n_ref": 1_000_000, "inner.n_updates": 1_000,
    "optim.batch_size": 1_000_000, "optim.n_validation_tasks": 1_000_000, "optim.n_iterations": 10**12,
    "optim.lr_decay_every": 10**12, "optim.validate_every": 10**12, "optim.max_nonfinite": 10**12,
    "eval.n_tasks": 100_000, "eval.batch_size": 100_000, "run.checkpoint_every": 10**12, "run.keep": 10_000,
    "run.threads": 1_024,
}
SEED_MAX = 2**63 - 1  # torch.Generator.manual_seed takes 64-bit seeds
