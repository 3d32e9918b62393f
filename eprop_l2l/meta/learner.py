"""The learning-to-learn model: demonstration trial → e-prop update(s) driven by the error module → test trial
→ meta-loss, as one differentiable function of the meta-parameters (e-prop 2, Bellec et al. 2019; the
authors' ``tutorial_eprop2.py``; docs/equations.md).

Meta-parameters: a tree per population (:mod:`.params`): ``network`` (the learning network's initial weights
``w_in``, ``w_rec``, ``w_out``, ``b_out``), ``error_module`` (the signal source's own tree) and, when the inner
learning rate is meta-learned, ``log_inner_lr``. Per task (= batch element) the plastic weights become fast
weights ``W − inner_lr·ΔW`` with a leading task dimension, computed by the fused e-prop update (no Python loop
over tasks); the outer loss is differentiated through everything by autograd.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..cells.base import Params
from ..cells.network import RecurrentNetwork
from ..error_modules.base import Observation
from ..errors import ConfigError, require_choice, require_count, require_positive
from ..information import INFORMATION, withhold
from ..information import check as check_information
from ..inner_loop.device import CHIP_WEIGHTS, PCMDevice
from ..inner_loop.eprop import READOUT_WEIGHTS
from ..inner_loop.fixed_point import PRECISIONS, number_format
from ..inner_loop.objectives import InnerObjective
from ..inner_loop.quantized_update import quantized_fast_weights
from ..inner_loop.read_each_step import ReadEachStep
from ..inner_loop.registry import RULES, Rule, UpdateRequest, rule_names
from ..inner_loop.regularization import RateRegularizer
from ..task_families.base import TaskBatch
from ..units import rate_hz
from .params import ERROR_MODULE, LOG_INNER_LR, NETWORK, Tree


def motor_mse(y: torch.Tensor, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Default outer loss: mean squared error of the readout against the targets."""
    mse = ((y - batch.targets) ** 2 * batch.mask.unsqueeze(-1)).sum() / (batch.mask.sum() * y.shape[-1])
    return mse, {"mse_motor": mse.detach()}


def time_step_ms(part) -> float | None:
    """The step (ms) a part's constants were derived with (its ``dt_ms``); None for parts without time constants
    (LSTM, feedback matrices)."""
    return getattr(part, "dt_ms", None)


# A device model's noise comes from its own stream, this far from the tasks' seed: drawing it never moves which
# tasks a seed gives (an evaluation with noise scores the same movements as one without).
NOISE_SEED_OFFSET = 7919


def run_learner(learner, meta: Tree, batch: TaskBatch, generator: torch.Generator) -> dict:
    """``learner.forward`` with ``generator`` for the draws of a device model; a learner without one never
    touches the generator (its task stream stays what it was)."""
    if getattr(learner, "device", None) is None:
        return learner.forward(meta, batch)
    return learner.forward(meta, batch, generator)


def mean_rate(trials: list[torch.Tensor]) -> torch.Tensor | None:
    """Spikes per step of each task and neuron ``[B, N]`` over several trials ``[B, T_k, N]`` (summed per trial:
    no concatenated copy, and its gradient is a broadcast rather than a full-size tensor per trial)."""
    if not trials:
        return None
    return sum(z.sum(1) for z in trials) / sum(z.shape[1] for z in trials)


# the e-prop 2 recipe's rate regularisation (coefficient, target in Hz), of MetaLearner's two regulariser fields
RECIPE_RATES = {"network_rate": (200.0, 20.0), "module_rate": (200.0, 10.0)}


@dataclass(frozen=True)
class MetaLearner:
    network: RecurrentNetwork
    error_module: object  # a learning-signal source (error_modules); its parameters are meta["error_module"]
    inner_lr: float = 1e-4  # the inner learning rate; with learn_inner_lr its initial value
    learn_inner_lr: bool = True  # meta-learned, as its log (meta["log_inner_lr"])
    n_inner_updates: int = 1
    plastic: tuple[str, ...] = ("w_in", "w_rec")
    kappa: float = 0.0  # trace filter of the inner update: 0 in e-prop 2 (L is applied to e directly)
    # firing-rate regularisers of the learning network and of the error module; None: the recipe's (below)
    network_rate: RateRegularizer | None = None
    module_rate: RateRegularizer | None = None
    outer_loss: Callable = motor_mse
    fast_loop: bool = True  # learning network's spiking loops with the hand-written backward (same gradients)
    # Mean over the tasks of a batch of per-task rates [B, N] -> [N]. Distributed training passes a
    # differentiable all-reduce so that the (nonlinear) rate regulariser sees the whole batch, not one shard.
    task_mean: Callable[[torch.Tensor], torch.Tensor] | None = None
    inner_rule: str = "eprop"
    # arithmetic of the inner update: "float", or a learning-engine format name of inner_loop.fixed_point
    # ("loihi", "wide") for hardware-aware meta-training through the quantised update
    precision: str = "float"
    # what the demonstration's error is measured on (inner_loop.objectives): motor targets or the hand path
    objective: InnerObjective = field(default_factory=InnerObjective)
    # the trainee's weights on a PCM crossbar (inner_loop.device): programmed with noise and drift, read with
    # noise in every trial, ΔW written at the device's resolution; forward then needs a generator
    device: PCMDevice | None = None

    def __post_init__(self):
        # the rules that can be the one-shot inner loop (inner_loop.registry): eprop (eligibility traces × the
        # error module's learning signal), bptt (one exact gradient step of the demonstration's loss,
        # MAML-style, differentiated to second order by the outer loop; the error module unused) and ostl (the
        # same with the coupling between neurons cut)
        require_choice("inner.rule", self.inner_rule, rule_names(one_shot=True))
        if not self.rule.reads_source and self.objective.kind == "hand":
            raise ConfigError("inner.objective", "'hand' is a deviation for feedback matrices; the BPTT step "
                              "descends the loss's gradient: use hand_gradient")
        require_positive("inner.lr", self.inner_lr)
        require_count("inner.n_updates", self.n_inner_updates, minimum=0)
        require_choice("inner.precision", self.precision, PRECISIONS)
        if self.precision != "float" and not self.rule.local:
            local = "|".join(rule_names(local=True, one_shot=True))
            raise ConfigError("inner.precision", f"{self.precision!r} needs inner.rule={local} (a learning-engine "
                              f"rule), got {self.inner_rule!r}")
        if self.device is not None and self.precision != "float":
            raise ConfigError("device.kind", f"a device model takes inner.precision=float, got {self.precision!r}")
        spec = getattr(self.network.cell, "spec", None)
        if self.precision != "float" and spec is not None and spec.model == "alif" and spec.n_adaptive > 0:
            # quantized_update forms the LIF tag ψL·x̄: it would drop the adaptation eligibility ε_a silently
            raise ConfigError("inner.precision", f"{self.precision!r}: the quantised update holds no per-synapse "
                              "adaptation eligibility ε_a of an ALIF learner (model.cell=alif); meta-train in float "
                              "(the export's fixed-point emulation holds ε_a)")
        if self.device is not None and self.device.reads_each_step and not self.rule.reads_source:
            # the BPTT rules simulate through the cell's probes, not network.run: the per-step reads would miss it
            raise ConfigError("device.read_every", f"'step' needs inner.rule=eprop (the trials run through the "
                              f"network's time loop), got {self.inner_rule!r}")
        if self.precision != "float" and set(self.plastic) - {"w_in", "w_rec"}:
            raise ConfigError("inner.plastic", f"{list(self.plastic)}: at inner.precision={self.precision!r} only "
                              "w_in and w_rec are plastic (the learning engine's connections)")
        for name, (coefficient, target_hz) in RECIPE_RATES.items():
            if getattr(self, name) is None:  # at the model's one step
                object.__setattr__(self, name, RateRegularizer(coefficient, target_hz, dt_ms=self.dt_ms))
        # parts built apart (the Python API) can disagree; built from a config they share task.dt_ms
        steps = self.time_steps()
        if any(v != self.dt_ms for v in steps.values()):
            raise ConfigError("task.dt_ms", "the model's parts use different time steps: "
                              + ", ".join(f"{k} {v:g} ms" for k, v in steps.items()))

    @property
    def rule(self) -> Rule:
        return RULES[self.inner_rule]

    @property
    def information(self) -> frozenset[str]:
        """What the inner rule is given of the demonstration (eprop_l2l.information): the BPTT step descends
        the inner objective's loss; e-prop reads what its signal source declares, plus what the objective's
        error needs where the source projects that error or the readout learns from it (its delta rule)."""
        if not self.rule.reads_source:
            return self.objective.information
        declared = getattr(self.error_module, "information", None)
        if declared is None:  # a source that declares nothing reads everything: nothing is withheld, recorded so
            return frozenset(INFORMATION)
        uses_error = getattr(self.error_module, "reads_error", True) or set(self.plastic) & set(READOUT_WEIGHTS)
        return check_information(declared | (self.objective.information if uses_error else frozenset()))

    def withhold(self, batch: TaskBatch) -> TaskBatch:
        """``batch`` as the inner rule may see it (eprop_l2l.information.withhold)."""
        return withhold(batch, self.information, self.objective.target_key)

    def time_steps(self) -> dict[str, float]:
        """The step of every part with time constants; one run has one step, so they must all agree."""
        module = self.error_module
        parts = {"network": self.network.cell, "readout": self.network.readout,
                 "error module": getattr(module, "cell", None), "learning-signal filter": module}
        steps = {name: time_step_ms(part) for name, part in parts.items()}
        steps.update({"network rate regulariser": self.network_rate.dt_ms,
                      "error module rate regulariser": self.module_rate.dt_ms})
        return {name: step for name, step in steps.items() if step is not None}

    @property
    def dt_ms(self) -> float:
        """The model's time step (its learning network's): spike counts per step become Hz with it."""
        return time_step_ms(self.network.cell) or self.network.readout.dt_ms

    def init_meta_params(self, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> Tree:
        """The meta-parameter tree (:mod:`.params`); the draws in this order: network, error module."""
        init_module = getattr(self.error_module, "init_params", None)
        meta = {NETWORK: self.network.init_params(generator, dtype),
                ERROR_MODULE: init_module(generator, dtype) if init_module is not None else {}}
        if self.learn_inner_lr:
            meta[LOG_INNER_LR] = torch.tensor(math.log(self.inner_lr), dtype=dtype)
        return meta

    def constrain_gradients(self, meta: Tree) -> None:
        """Recurrent spiking weights have no self-connections: the diagonals of the network's ``w_rec`` (and of
        the error module's cell's) are not meta-parameters, so their meta-gradients are zeroed (they stay at
        their initial value, 0). The inner update already leaves them alone."""
        module_cell = getattr(self.error_module, "cell", None)
        recurrent = [(self.network.cell, meta[NETWORK])]
        if module_cell is not None and "cell" in meta[ERROR_MODULE]:
            recurrent.append((module_cell, meta[ERROR_MODULE]["cell"]))
        for cell, params in recurrent:
            if not getattr(cell, "self_connections", True) and "w_rec" in params:
                grad = params["w_rec"].grad
                if grad is not None:
                    grad.diagonal(dim1=-2, dim2=-1).zero_()

    def inner_lr_value(self, meta: Tree) -> torch.Tensor | float:
        """The inner learning rate: ``exp(meta["log_inner_lr"])`` when meta-learned, else ``inner_lr``."""
        return meta[LOG_INNER_LR].exp() if self.learn_inner_lr else self.inner_lr

    def _task_means(self, *rates: torch.Tensor) -> list[torch.Tensor]:
        """The batch mean of each population's per-task rates ``[B, N_k]``; across processes in one reduction
        (each is a synchronisation of every process, and costs about a millisecond with gloo)."""
        if self.task_mean is None:
            return [r.mean(0) for r in rates]
        return list(self.task_mean(torch.cat(rates, -1)).split([r.shape[-1] for r in rates], -1))


    def _module_drive(self, meta: Tree, batch: TaskBatch) -> torch.Tensor | None:
        """A learned module's input current from context and inputs: equal in every trial of the batch (None
        where the module does not run: the BPTT inner step, feedback sources). ``batch`` is already withheld."""
        fixed = getattr(self.error_module, "fixed_drive", None)
        if fixed is None or not self.rule.reads_source:
            return None
        return fixed(meta[ERROR_MODULE], Observation(inputs=batch.inputs, context=batch.context))

    def _chip(self, generator: torch.Generator | None):
        if self.device is not None and generator is None:
            raise ConfigError("device.kind", "a device model draws noise: call forward(meta, batch, generator)")
        return self.device

    def adapt(self, meta: Tree, batch: TaskBatch, drive: torch.Tensor | None = None,
              generator: torch.Generator | None = None):
        """One-shot adaptation: the network's per-task fast weights (a tree of the ``network`` population's
        names) and the demonstration trial's records. With a device model the fast weights are the programmed
        ones (what the crossbar holds, before read noise)."""
        batch = self.withhold(batch)  # the rule never sees what it did not declare
        b = batch.inputs.shape[0]
        chip = self._chip(generator)
        # The first demonstration runs on the shared initial weights (one matrix-matrix product per step) and
        # gives each task its own ΔW; the quantised update and a device (each task's own chip) need per-task ones.
        shared_first = self.precision == "float" and chip is None
        per_task = set() if shared_first else set(self.plastic) | (set(CHIP_WEIGHTS) if chip is not None else set())
        fast = {k: (v.expand(b, *v.shape) if k in per_task else v) for k, v in meta[NETWORK].items()}
        if chip is not None:  # every task's crossbar is written with the initial weights
            fast = {k: (chip.program(v, generator) if k in CHIP_WEIGHTS else v) for k, v in fast.items()}
        inner_lr = self.inner_lr_value(meta)
        drive = self._module_drive(meta, batch) if drive is None else drive
        loss, target = self.objective.loss(), self.objective.target(batch)
        demos = []
        rule = self.rule
        for _ in range(self.n_inner_updates):
            # a rule that reads the error module gets it; the BPTT step is differentiated to second order by
            # the outer loop, through autograd's own loop (the hand-written backward is first order)
            read = self.read(fast, generator)
            result = rule.update(UpdateRequest(
                network=self.trial_network(generator), params=read, batch=batch, loss=loss, target=target,
                plastic=self.plastic,
                source=self.error_module if rule.reads_source else None,
                source_params=meta[ERROR_MODULE] if rule.reads_source else None, source_drive=drive, kappa=self.kappa,
                fast=self.fast_loop and rule.reads_source, per_task=True, create_graph=torch.is_grad_enabled()))
            demos.append(result)
            if self.precision != "float":
                fast = quantized_fast_weights(self.network.cell, fast, result, batch.inputs, self.plastic, inner_lr,
                                              number_format(self.precision))
                continue
            if chip is not None:
                fast = {k: (chip.reprogram(v, -inner_lr * result.grads[k], generator) if k in self.plastic else v)
                        for k, v in fast.items()}
                continue
            fast = {k: (v - inner_lr * result.grads[k] if k in self.plastic else v) for k, v in fast.items()}
        return fast, demos

    def read(self, fast: Params, generator: torch.Generator | None) -> Params:
        """The weights one trial runs with: the crossbar's, read with noise (unchanged without a device, and
        where the device reads at every step: :meth:`trial_network` draws then)."""
        chip = self._chip(generator)
        if chip is None or chip.reads_each_step:
            return fast
        return {k: (chip.read(v, generator) if k in CHIP_WEIGHTS else v) for k, v in fast.items()}

    def trial_network(self, generator: torch.Generator | None):
        """The network the trials run on: the learning network, or, where the device draws read noise at every
        step, the same network reading its chip weights anew at each step from ``generator``."""
        chip = self._chip(generator)
        return ReadEachStep(self.network, chip, generator) if chip is not None and chip.reads_each_step \
            else self.network

    def forward(self, meta: Tree, batch: TaskBatch, generator: torch.Generator | None = None) -> dict:
        """Meta-loss and diagnostics of one batch of tasks; ``generator`` draws a device model's noise."""
        if batch.dt_ms != self.dt_ms:
            raise ConfigError("task.dt_ms", f"the trials have {batch.dt_ms:g}-ms steps, the model {self.dt_ms:g}-ms")
        seen = self.withhold(batch)  # what the inner rule and its source may read
        drive = self._module_drive(meta, seen)
        fast, demos = self.adapt(meta, seen, drive, generator)
        trajectory, y_test = self.trial_network(generator).run(self.read(fast, generator), batch.inputs,
                                                               fast=self.fast_loop)
        task_loss, metrics = self.outer_loss(y_test, batch)
        spikes = [trajectory.outputs] + [d.trajectory.outputs for d in demos]
        module_spikes = [d.source_trajectory.outputs for d in demos if d.source_trajectory is not None]
        if module_spikes:
            obs = Observation(output=y_test, target=seen.targets, spikes=trajectory.outputs, inputs=seen.inputs,
                              context=seen.context, drive=drive)
            # the module runs in the test trial too, for the rate regulariser only: its signals are not needed
            activity = getattr(self.error_module, "activity", None)
            own = meta[ERROR_MODULE]
            test_module = activity(own, obs) if activity is not None else self.error_module.run(own, obs)[1]
            module_spikes.append(test_module.outputs)
        network_rates, module_rates = mean_rate(spikes), mean_rate(module_spikes)
        if module_spikes:
            network_mean, module_mean = self._task_means(network_rates, module_rates)
            reg = self.network_rate.loss_from_rate(network_mean) + self.module_rate.loss_from_rate(module_mean)
        else:
            reg = self.network_rate.loss_from_rate(self._task_means(network_rates)[0])
        before = demos[0].outputs if demos else y_test
        _, metrics_before = self.outer_loss(before, batch)
        metrics = {**{f"{k}_after": v for k, v in metrics.items()}, **{f"{k}_before": v.detach()
                                                                        for k, v in metrics_before.items()}}
        metrics["rate_network_hz"] = rate_hz(network_rates.mean().detach(), self.dt_ms)
        if module_spikes:  # the error module runs on the learning network's steps (checked at construction)
            metrics["rate_module_hz"] = rate_hz(module_rates.mean().detach(), self.dt_ms)
        return {"loss": task_loss + reg, "task_loss": task_loss, "reg": reg, "metrics": metrics,
                "y_test": y_test, "y_demo": before, "fast": fast, "demos": demos, "test_trajectory": trajectory}
