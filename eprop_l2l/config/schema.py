"""The configuration schema of a meta-training run: typed dataclasses with documented defaults, used by
OmegaConf as structured configs (unknown keys and wrong types are refused when YAML and overrides are merged
onto them) and, after conversion, by :mod:`.build` (impossible values are refused by the components, each
error naming its dotted key). Every value a user may change lives here; the YAML files in ``configs/`` only
choose among them (experiment presets, ``task/``, ``model/``, ``inner/``, ``error_module/``).

Defaults are the authors' e-prop 2 setting (``experiment=paper``; docs/hyperparameters.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..inner_loop.device import PCMDevice
from ..meta.learner import MetaLearner
from ..units import DEFAULT_STEP_MS


@dataclass
class TaskConfig:
    # arm_sines (e-prop 2) | arm_brownian (natural e-prop's planar arm) | scorbot_brownian (natural e-prop's
    # ED-Scorbot, docs/natural_eprop.md); docs/equations.md
    family: str = "arm_sines"
    n_steps: int = 500  # trial length in steps: the trial lasts n_steps·dt_ms ms
    n_pop_per_dim: int = 100  # population code of the target for the error module: neurons per joint
    # Simulation time step in ms; every time constant, rate and duration is converted with it (membrane,
    # adaptation, readout and learning-signal decays exp(-dt/τ), rate targets in spikes per step, the clock
    # period and the Brownian family's window in steps, the population code's spike probability, the arm's
    # kinematics). It must divide the arm clock's 10-ms period. Counts stay counts: n_steps, model.n_ref and
    # error_module.n_ref are numbers of steps.
    dt_ms: float = DEFAULT_STEP_MS


@dataclass
class CellConfig:
    """One recurrent population — the learning network or the error module: the same keys, the same meanings."""

    cell: str = "lif"  # lif | alif (| lstm for the error module)
    n_rec: int = 400
    n_adaptive: int | None = None  # alif: how many neurons adapt (the last ones); null = all, 0 = none
    tau_m: float = 20.0  # ms
    v_th: float = 0.4
    n_ref: int = 5  # refractory steps (n_ref·dt_ms ms)
    tau_a: float = 200.0  # ms, alif only
    beta: float = 0.07  # alif only
    rate_target_hz: float = 20.0
    rate_coefficient: float = 200.0  # (c/2)·Σ_j (f_j − f*)²: c = 200 is the authors' 100·Σ(f − f*)²


@dataclass
class ModelConfig(CellConfig):
    """The learning network: recurrent spiking cell and leaky readout to the two joint velocities."""

    tau_out: float = 20.0  # ms, readout
    readout_init: float = 0.05  # W_out ~ readout_init · N(0, 1)/√n_rec


@dataclass
class ErrorModuleConfig(CellConfig):
    """Where the learning signals come from: a learned recurrent module (e-prop 2 / natural e-prop) or the
    output error broadcast through a meta-learned feedback matrix (e-prop 1 inside learning-to-learn). Its
    population's keys are those of :class:`CellConfig`."""

    n_rec: int = 300
    rate_target_hz: float = 10.0
    kind: str = "learned"  # learned | feedback
    feedback: str = "random"  # kind=feedback: random | symmetric
    use_context: bool = True  # the population-coded target movement
    use_spikes: bool = True  # the learning network's spikes (e-prop 2: yes; natural e-prop: no)
    use_inputs: bool = True  # the clock input
    # the hand path the learner's own output produces through the arm, in the target path's population code
    use_produced_path: bool = False
    signal_tau: float = 20.0  # ms; leak of the learning signal filter
    projection_scale: float = 1.0  # Ψ ~ projection_scale · N(0, 1)/√n_rec


@dataclass
class InnerConfig:
    """The inner loop: how the demonstration trial changes the learning network."""

    rule: str = "eprop"  # eprop (eligibility traces × learning signal) | bptt (MAML-style gradient step)
    lr: float = 1e-4  # η; with learn_lr its initial value
    learn_lr: bool = MetaLearner.learn_inner_lr  # meta-learn the inner rate (as its log); MetaLearner's default
    n_updates: int = 1  # demonstrations / updates before the test trial (0 = no adaptation)
    plastic: list[str] = field(default_factory=lambda: ["w_in", "w_rec"])
    # what the demonstration's error is measured on (docs/equations.md, "Inner objectives"): motor (y − y*, the
    # target joint velocities) | hand (the Cartesian deviation p − p* of the produced hand path, for feedback
    # matrices) | hand_gradient (∂E_cart/∂y through the arm's Jacobian: symmetric feedback, BPTT)
    objective: str = "motor"
    # filter the eligibility traces with the readout's κ (e-prop 1 as in Bellec et al. 2020: symmetric feedback
    # is then exact where e-prop is); false: κ = 0, L applied to e directly (e-prop 2)
    filter_traces: bool = False
    fast_loop: bool = True  # spiking loops with the hand-written backward (same values and gradients)
    # arithmetic of the inner update: float | loihi (Loihi 2's learning-engine integers, hardware-aware
    # meta-training with straight-through gradients) | wide (the same integer pipeline, wide enough to be exact)
    precision: str = "float"


_PCM = PCMDevice()  # the device model's own defaults


@dataclass
class DeviceConfig:
    """Where the trainee's weights live (inner_loop/device.py, docs/natural_eprop.md): none (exact floats) or pcm
    (a phase-change-memory crossbar: programming noise, drift and read noise, ΔW at the device's resolution),
    in meta-training (hardware-aware) and evaluation alike."""

    kind: str = "none"  # none | pcm
    update_step: float = _PCM.update_step  # ΔW is programmed in multiples of this (0: not rounded)
    programming_noise: bool = _PCM.programming_noise
    drift: bool = _PCM.drift
    read_noise: bool = _PCM.read_noise


@dataclass
class OptimConfig:
    """The outer loop (meta-training): Adam with clipping and step decay, periodic validation."""

    n_iterations: int = 10000
    batch_size: int = 100  # tasks per meta-iteration, split over distributed processes
    lr: float = 1e-3
    lr_decay: float = 0.99
    lr_decay_every: int = 500
    clip_norm: float = 1.0  # 0 disables clipping
    validate_every: int = 50
    n_validation_tasks: int = 64
    validation_seed: int = 999
    seed: int = 0  # the training task stream and the initial meta-parameters
    max_nonfinite: int = 10  # abort after this many non-finite steps in a row
    budget_minutes: float = 0.0  # CPU minutes of the whole training, resumes included; 0 = none
    lr_schedule: str = "steps"  # steps: ×lr_decay every lr_decay_every | budget: lr·lr_end^(budget fraction)
    lr_end: float = 0.1  # lr_schedule=budget: the fraction of lr left when the budget is spent


@dataclass
class EvalConfig:
    n_tasks: int = 100
    seed: int = 12345  # held-out stream, separate from training and validation
    batch_size: int = 50
    figures: bool = True
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
