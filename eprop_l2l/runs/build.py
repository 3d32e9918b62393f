"""From a validated :class:`~.config.TrainConfig` to the library objects: task family, :class:`MetaLearner`,
:class:`MetaTraining` and :class:`SessionOptions`. Every impossible value raises a one-line
:class:`~eprop_l2l.errors.ConfigError` naming its config key (``model.tau_m: must be > 0, got -1.0``) before
anything is computed."""

from __future__ import annotations

import dataclasses
import math
import re
from contextlib import contextmanager

from ..cells import LeakyReadout, RecurrentNetwork, make_cell
from ..cells.spec import NEURON_MODELS
from ..config.schema import LIMITS, SEED_MAX, TaskConfig, TrainConfig
from ..error_modules.feedback import META_FEEDBACK_KINDS, Feedback
from ..error_modules.learned import LearnedErrorModule
from ..errors import ConfigError, require_choice, require_count, require_non_negative, require_positive
from ..inner_loop.device import PCMDevice
from ..inner_loop.objectives import OBJECTIVES, InnerObjective
from ..inner_loop.registry import rule_names
from ..inner_loop.regularization import RateRegularizer
from ..messages import cut, escape, shown
from ..meta.learner import MetaLearner
from ..meta.params import flat
from ..meta.trainer import MetaTraining
from ..task_families import FAMILIES, make_task_family
from .rundir import check_path
from .session import SessionOptions

# the families meta-training runs on: those with an outer objective (task_families.base.MetaObjective)
META_FAMILIES = tuple(name for name, family in FAMILIES.items() if hasattr(family, "outer_loss"))
SPIKING = NEURON_MODELS  # the spiking cells a config names (cells.spec)
PLASTIC = ("w_in", "w_rec", "w_out")
WANDB_MODES = ("offline", "online", "disabled")
BACKENDS = ("auto", "gloo", "nccl")


@contextmanager
def section(name: str):
    """Re-key a component's ConfigError (``alif.tau_a``) to the config key (``model.tau_a``)."""
    try:
        yield
    except ConfigError as err:
        if err.key.startswith(name + "."):
            raise
        field = err.key.rsplit(".", 1)[-1]
        raise ConfigError(f"{name}.{field}", err.problem) from None


def _cell(key: str, spec, n_in: int, spiking_only: bool, dt_ms: float):
    choices = SPIKING if spiking_only else (*SPIKING, "lstm")
    require_choice(f"{key}.cell", spec.cell, choices)
    require_count(f"{key}.n_rec", spec.n_rec)
    if spec.cell == "lstm":
        return make_cell("lstm", n_in=n_in, n_rec=spec.n_rec)
    fields = {"n_in": n_in, "n_rec": spec.n_rec, "tau_m": spec.tau_m, "v_th": spec.v_th, "n_ref": spec.n_ref,
              "dt_ms": dt_ms}
    if spec.n_adaptive is not None:  # null: every neuron adapts; 0: none
        require_count(f"{key}.n_adaptive", spec.n_adaptive, minimum=0)
    if spec.cell == "alif":
        fields.update(n_adaptive=spec.n_adaptive, tau_a=spec.tau_a, beta=spec.beta)
    elif spec.n_adaptive:
        raise ConfigError(f"{key}.n_adaptive", f"needs cell=alif, got cell={spec.cell!r}")
    if spec.cell == "cuba_lif":
        fields["tau_syn"] = spec.tau_syn
    with section(key):
        return make_cell(spec.cell, **fields)


def _rate(key: str, spec, dt_ms: float) -> RateRegularizer:
    require_non_negative(f"{key}.rate_coefficient", spec.rate_coefficient)
    require_non_negative(f"{key}.rate_target_hz", spec.rate_target_hz)
    return RateRegularizer(spec.rate_coefficient, spec.rate_target_hz, dt_ms=dt_ms)


def build_family(cfg: TrainConfig):
    require_choice("task.family", cfg.task.family, META_FAMILIES)
    require_positive("task.dt_ms", cfg.task.dt_ms)
    if cfg.task.dt_ms < 1e-3:  # decays, step counts and rates overflow or underflow below that
        raise ConfigError("task.dt_ms", f"must be >= 0.001 (1 µs), got {shown(cfg.task.dt_ms)}")
    # what the family refuses about the step (a clock period that is not a whole number of steps, ...) is a
    # problem of task.dt_ms
    with section("task"):
        fields = {"n_steps": cfg.task.n_steps, "dt_ms": cfg.task.dt_ms}
        # the target path's code: each family takes the keys of the code it has; the Scorbot codes in bits only,
        # so it has no n_pop_per_dim (ignored, as before) and refuses another context_code
        has = {f.name for f in dataclasses.fields(FAMILIES[cfg.task.family])}
        for key in ("n_pop_per_dim", "context_code", "code_bits", "consistent_targets"):
            if key in has:
                fields[key] = getattr(cfg.task, key)
        if "consistent_targets" not in has and cfg.task.consistent_targets != TaskConfig.consistent_targets:
            raise ConfigError("task.consistent_targets", f"{cfg.task.family} does not clip its target angles; the "
                              "key chooses the Scorbot's target velocities")
        if "context_code" not in has and cfg.task.context_code != TaskConfig.context_code:
            raise ConfigError("task.context_code", f"{cfg.task.family} codes its target path in one way (binary, "
                              "task.code_bits); the key chooses for the planar arms")
        return make_task_family(cfg.task.family, **fields)


def build_learner(cfg: TrainConfig, family) -> MetaLearner:
    """The model, every part at the one time step ``task.dt_ms``."""
    m, e, inner, dt_ms = cfg.model, cfg.error_module, cfg.inner, cfg.task.dt_ms
    cell = _cell("model", m, family.n_in, spiking_only=True, dt_ms=dt_ms)
    require_positive("model.readout_init", m.readout_init)
    with section("model"):
        readout = LeakyReadout(m.n_rec, family.n_out, tau_out=m.tau_out, dt_ms=dt_ms, bias=False,
                               init_scale=m.readout_init)
    require_choice("error_module.kind", e.kind, ("learned", "feedback"))
    plant = getattr(family, "plant", None)
    if e.kind == "learned":
        if e.use_produced_path and not hasattr(plant, "code"):
            raise ConfigError("error_module.use_produced_path", f"needs a family with a plant, got {cfg.task.family}")
        module_in = (family.n_context * e.use_context + m.n_rec * e.use_spikes + family.n_in * e.use_inputs
                     + (plant.n_code if e.use_produced_path else 0))
        if module_in == 0:
            raise ConfigError("error_module.use_context", "the error module sees nothing: enable at least one input")
        module_cell = _cell("error_module", e, module_in, spiking_only=False, dt_ms=dt_ms)
        require_positive("error_module.projection_scale", e.projection_scale)
        with section("error_module"):
            module = LearnedErrorModule(module_cell, m.n_rec, family.n_context, family.n_in, e.use_context,
                                        e.use_spikes, e.use_inputs, e.signal_tau, dt_ms=dt_ms,
                                        projection_scale=e.projection_scale, fast_loop=inner.fast_loop,
                                        use_produced_path=e.use_produced_path,
                                        plant=plant if e.use_produced_path else None)
    else:
        require_choice("error_module.feedback", e.feedback, META_FEEDBACK_KINDS)
        module = Feedback(e.feedback, m.n_rec, family.n_out)
    require_choice("inner.rule", inner.rule, rule_names(one_shot=True))
    require_choice("inner.objective", inner.objective, OBJECTIVES)
    with section("inner"):
        objective = InnerObjective(inner.objective, plant)
    for name in inner.plastic:
        require_choice("inner.plastic", name, PLASTIC)
    if not inner.plastic:
        raise ConfigError("inner.plastic", "must name at least one weight (w_in, w_rec, w_out)")
    return MetaLearner(RecurrentNetwork(cell, readout), module, device=_device(cfg.device),
                       inner_lr=inner.lr, learn_inner_lr=inner.learn_lr,
                       n_inner_updates=inner.n_updates, plastic=tuple(inner.plastic), inner_rule=inner.rule,
                       precision=inner.precision,
                       network_rate=_rate("model", m, dt_ms), module_rate=_rate("error_module", e, dt_ms),
                       outer_loss=family.outer_loss, fast_loop=inner.fast_loop, objective=objective,
                       kappa=readout.kappa if inner.filter_traces else 0.0)


DEVICE_KINDS = ("none", "pcm")


def _device(spec) -> PCMDevice | None:
    require_choice("device.kind", spec.kind, DEVICE_KINDS)
    if spec.kind == "none":
        return None
    with section("device"):
        return PCMDevice(update_step=spec.update_step, programming_noise=spec.programming_noise, drift=spec.drift,
                         read_noise=spec.read_noise, read_every=spec.read_every)


def build_training(cfg: TrainConfig, world_size: int = 1) -> MetaTraining:
    o = cfg.optim
    with section("optim"):
        training = MetaTraining(**{f.name: getattr(o, f.name) for f in dataclasses.fields(MetaTraining)})
    for key in ("batch_size", "n_validation_tasks"):
        if getattr(o, key) % world_size:
            raise ConfigError(f"optim.{key}", f"must be divisible by the number of processes ({world_size}), "
                              f"got {getattr(o, key)}")
    return training


def build_session(cfg: TrainConfig) -> SessionOptions:
    r = cfg.run
    require_count("run.checkpoint_every", r.checkpoint_every)
    require_count("run.keep", r.keep)
    require_non_negative("run.minutes", r.minutes)
    require_count("run.threads", r.threads, minimum=0)
    return SessionOptions(checkpoint_every=r.checkpoint_every, keep=r.keep, minutes=r.minutes, progress=r.progress)


# the minimum of every bounded count (the maximum is config.LIMITS)
MINIMUM = {"model.n_ref": 0, "error_module.n_ref": 0, "inner.n_updates": 0, "optim.n_iterations": 0,
           "run.threads": 0}
EXPERIMENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
WANDB_FORBIDDEN = set("/\\#?%:")


def _value(cfg: TrainConfig, key: str):
    section_name, name = key.split(".")
    return getattr(getattr(cfg, section_name), name)


def _big(value: int) -> str:
    """An integer as a message shows it: with thousands separators, cut (no 10⁵-digit echoes)."""
    if value.bit_length() > 256:
        return f"a number of {value.bit_length()} bits"
    return cut(f"{value:,}", 40)


def check_bounds(cfg: TrainConfig) -> None:
    """Every size and count within [minimum, config.LIMITS]: nothing is built from an absurd size."""
    for key, limit in LIMITS.items():
        value = _value(cfg, key)
        require_count(key, value, MINIMUM.get(key, 1))
        if value > limit:
            raise ConfigError(key, f"must be <= {limit:,}, got {_big(value)}")
    for key in ("optim.seed", "optim.validation_seed", "eval.seed"):
        value = _value(cfg, key)
        require_count(key, value, minimum=0)
        if value > SEED_MAX:
            raise ConfigError(key, f"must be <= 2**63-1 (a 64-bit generator seed), got {_big(value)}")


def _text(key: str, value, limit: int = 128, optional: bool = True, forbidden: set[str] = frozenset()) -> None:
    if value is None and optional:
        return
    if not isinstance(value, str):
        raise ConfigError(key, f"must be a string, got {shown(value)}")
    if escape(value) != value:
        raise ConfigError(key, f"contains control characters: {shown(value)}")
    if not value.strip():
        raise ConfigError(key, "must not be empty" + (" (leave it unset: null)" if optional else ""))
    if len(value) > limit:
        raise ConfigError(key, f"at most {limit} characters, got {len(value)}: {shown(value)}")
    bad = sorted(set(value) & set(forbidden))
    if bad:
        raise ConfigError(key, f"must not contain {' '.join(bad)}: {shown(value)}")


def _check_unused(cfg: TrainConfig, family) -> None:
    """Values of parts the configuration does not use (alif constants with cell=lif, the learned error module
    with kind=feedback, spiking constants of an lstm module, ...) are checked as strictly as used ones: a
    configuration is either valid as a whole or refused."""
    m, e, dt = cfg.model, cfg.error_module, cfg.task.dt_ms
    for key, population in (("model", m), ("error_module", e)):
        require_positive(f"{key}.tau_a", population.tau_a)
        require_positive(f"{key}.tau_syn", population.tau_syn)
        beta = population.beta
        if isinstance(beta, bool) or not isinstance(beta, int | float) or not math.isfinite(beta):
            raise ConfigError(f"{key}.beta", f"must be a finite number, got {shown(beta)}")
    require_choice("error_module.feedback", e.feedback, META_FEEDBACK_KINDS)
    require_positive("error_module.signal_tau", e.signal_tau)
    require_positive("error_module.projection_scale", e.projection_scale)
    if e.cell == "lstm":
        require_positive("error_module.tau_m", e.tau_m)
        require_positive("error_module.v_th", e.v_th)
        if e.n_adaptive:
            raise ConfigError("error_module.n_adaptive", f"needs cell=alif, got cell={e.cell!r}")
    _cell("error_module", e, max(1, family.n_in), spiking_only=False, dt_ms=dt)  # also with kind=feedback


def check_run(cfg: TrainConfig) -> None:
    """The remaining values that are not consumed by a library object."""
    if not isinstance(cfg.run.device, str) or not re.fullmatch(r"cpu|cuda(:\d{1,3})?", cfg.run.device):
        raise ConfigError("run.device", f"must be cpu, cuda or cuda:N, got {shown(cfg.run.device)}")
    require_choice("wandb.mode", cfg.wandb.mode, WANDB_MODES)
    require_choice("distributed.backend", cfg.distributed.backend, BACKENDS)
    if cfg.distributed.backend == "nccl" and not cfg.run.device.startswith("cuda"):
        raise ConfigError("distributed.backend", "nccl needs GPUs (run.device=cuda); on CPUs use gloo or auto")
    check_bounds(cfg)
    if not isinstance(cfg.experiment, str) or not EXPERIMENT_NAME.fullmatch(cfg.experiment):
        raise ConfigError("experiment", f"must be a name of letters, digits, _ . - (at most 64), got "
                          f"{shown(cfg.experiment)}")
    o = cfg.optim
    require_positive("optim.lr_decay", o.lr_decay)
    if o.lr_decay > 1:
        raise ConfigError("optim.lr_decay", f"must be in (0, 1] (the learning rate is multiplied by it every "
                          f"optim.lr_decay_every iterations), got {shown(o.lr_decay)}")
    for key in ("run.dir", "run.init_from"):
        value = _value(cfg, key)
        if not isinstance(value, str):
            raise ConfigError(key, f"must be a path, got {shown(value)}")
        if value:
            check_path(key, value)
    w = cfg.wandb
    _text("wandb.project", w.project, optional=False, forbidden=WANDB_FORBIDDEN)
    _text("wandb.entity", w.entity, forbidden=WANDB_FORBIDDEN)
    _text("wandb.name", w.name)
    _text("wandb.group", w.group)
    for tag in w.tags:
        _text("wandb.tags", tag, limit=64, optional=False)
    for key, limit in (("wandb.timeout_s", 3600), ("distributed.timeout_s", 86400)):
        require_positive(key, _value(cfg, key))
        if _value(cfg, key) > limit:
            raise ConfigError(key, f"must be <= {limit} s, got {shown(_value(cfg, key))}")
    if len(set(cfg.inner.plastic)) != len(cfg.inner.plastic):
        raise ConfigError("inner.plastic", f"names a weight twice: {shown(list(cfg.inner.plastic))}")
    for prefix in cfg.eval.reinit:
        _text("eval.reinit", prefix, limit=64, optional=False)


def check_reinit(cfg: TrainConfig, family) -> None:
    """Every ``eval.reinit`` prefix names meta-parameters of the configured model (a typo is not a silent
    no-op); the names are read from the same model at small sizes."""
    if not cfg.eval.reinit:
        return
    import torch

    small = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, n_rec=2, n_adaptive=None),
                                error_module=dataclasses.replace(cfg.error_module, n_rec=2, n_adaptive=None))
    names = sorted(flat(build_learner(small, family).init_meta_params(torch.Generator().manual_seed(0))))
    for prefix in cfg.eval.reinit:
        if not any(name.startswith(prefix) for name in names):
            raise ConfigError("eval.reinit", f"{shown(prefix)} matches no meta-parameter (names: "
                              f"{', '.join(names)})")


def build(cfg: TrainConfig, world_size: int = 1):
    """Validate everything, then build: ``(learner, family, training, session_options)``. Sizes are bounded
    (config.LIMITS) before anything is built, and the evaluation's memory estimate is checked against this
    machine (CPU; training's in ``train``)."""
    check_run(cfg)
    family = build_family(cfg)
    _check_unused(cfg, family)
    learner = build_learner(cfg, family)
    training, session = build_training(cfg, world_size), build_session(cfg)
    check_reinit(cfg, family)
    if cfg.run.device == "cpu":
        from .resources import check_memory

        check_memory(cfg, family, world_size, phases=("evaluation",))
    return learner, family, training, session


def from_experiment(name: str, *overrides: str):
    """``(learner, family, training)`` of an experiment preset in ``configs/experiment`` (with overrides)."""
    from ..config.compose import load_config

    learner, family, training, _ = build(load_config([f"experiment={name}", *overrides]))
    return learner, family, training
