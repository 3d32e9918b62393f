"""A Python API for a trained e-prop 2 model: load a run, show it one movement of your own, get the adapted
network back.

    from eprop_l2l.api import load_run

    model = load_run("docs/results/arm_gpu")                 # learner, meta-parameters, family, config (CPU)
    result = model.adapt(hand_path=path)                     # or joint_velocities=omega, both [T, 2]
    result.mse_cart_before, result.mse_cart_after            # one demonstration + ONE e-prop update + test trial

The movement becomes trials exactly as the run's task family builds them (:meth:`ArmTrials.trials`: the clock
input, the arm's hand path, the population-coded target for the error module); a hand path is first turned into
joint velocities by the arm's inverse kinematics (:func:`~eprop_l2l.task_families.arm.joint_velocities_from_hand`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from .config.schema import TrainConfig
from .errors import ConfigError
from .meta.learner import MetaLearner, run_learner
from .meta.params import device as params_device
from .task_families.arm import ArmTrials, joint_velocities_from_hand
from .task_families.arm_objective import arm_errors, produced_hand
from .task_families.base import TaskBatch

__all__ = ["Adaptation", "TrainedModel", "load_run"]


# the longest movement adapt() takes: the trial's activations grow with it (10⁵ steps of 1 ms = 100 s)
MAX_MOVEMENT_STEPS = 100_000


def check_movement(key: str, movement: torch.Tensor) -> None:
    """A movement ``[T, 2]`` the model can run: finite, 1 ≤ T ≤ MAX_MOVEMENT_STEPS (one line naming ``key``)."""
    if not 1 <= movement.shape[0] <= MAX_MOVEMENT_STEPS:
        raise ConfigError(key, f"must have 1 to {MAX_MOVEMENT_STEPS:,} steps, got {movement.shape[0]:,}")
    if not bool(torch.isfinite(movement).all()):
        raise ConfigError(key, "holds NaN or infinite values")


@dataclass(frozen=True)
class Adaptation:
    """One-shot adaptation to one movement: the demonstration trial (the network before the update, while the
    error module computes the learning signals), one e-prop update, the test trial (after it). Tensors are on
    the CPU: velocities ``[T, 2]`` in rad/s, hand paths ``[T, 2]`` in arm units (segments 0.5 + 0.5)."""

    fast_weights: dict[str, torch.Tensor]  # the plastic weights after the update (w_in, w_rec, ...)
    target_joint_velocities: torch.Tensor
    target_hand: torch.Tensor
    joint_velocities_before: torch.Tensor
    joint_velocities_after: torch.Tensor
    hand_before: torch.Tensor
    hand_after: torch.Tensor
    mse_cart_before: float
    mse_cart_after: float
    mse_motor_before: float
    mse_motor_after: float
    hand_rmse_before: float
    hand_rmse_after: float
    learning_signals: torch.Tensor | None  # L [T, n_rec] of the demonstration (None without an e-prop update)
    batch: TaskBatch  # the trial the family built from the movement (one task)


@dataclass(frozen=True)
class TrainedModel:
    """A meta-trained run: the learner (:class:`~eprop_l2l.meta.learner.MetaLearner`), its meta-parameters
    (initial weights, error module, inner η), the task family and the validated configuration."""

    learner: MetaLearner
    meta: dict  # the meta-parameter tree (meta.params)
    family: ArmTrials
    config: TrainConfig
    checkpoint: Path
    iteration: int

    @property
    def device(self) -> torch.device:
        return params_device(self.meta)

    def trials(self, joint_velocities: torch.Tensor, generator: torch.Generator) -> TaskBatch:
        """The family's trial for one movement ``[T, 2]`` (rad/s); a length other than the family's ``n_steps``
        uses the same family at that length."""
        omega = torch.as_tensor(joint_velocities, dtype=torch.float64)
        if omega.dim() != 2 or omega.shape[-1] != 2:
            raise ConfigError("joint_velocities", f"must have shape [T, 2], got {list(omega.shape)}")
        check_movement("joint_velocities", omega)
        family = self.family
        if omega.shape[0] != family.n_steps:
            family = dataclasses.replace(family, n_steps=omega.shape[0])
        return family.trials(omega.unsqueeze(0), generator)

    @torch.no_grad()
    def adapt(self, joint_velocities=None, hand_path=None, seed: int = 0,
              generator: torch.Generator | None = None) -> Adaptation:
        """Adapt to one movement, given as ``joint_velocities [T, 2]`` (rad/s; shoulder, relative elbow) or as
        ``hand_path [T, 2]`` (x, y; step t is the hand after t + 1 steps from the start posture (0.5, 0.5)).
        ``seed`` (or ``generator``) draws the error module's population-coded spikes."""
        if (joint_velocities is None) == (hand_path is None):
            raise ConfigError("adapt", "give exactly one of joint_velocities=[T, 2] or hand_path=[T, 2]")
        if hand_path is not None:
            hand = torch.as_tensor(hand_path, dtype=torch.float64)
            if hand.dim() != 2 or hand.shape[-1] != 2:
                raise ConfigError("hand_path", f"must have shape [T, 2], got {list(hand.shape)}")
            check_movement("hand_path", hand)
            joint_velocities = joint_velocities_from_hand(hand, dt_ms=self.family.dt_ms)
        generator = generator if generator is not None else torch.Generator().manual_seed(seed)
        batch = self.trials(joint_velocities, generator)
        out = run_learner(self.learner, self.meta, batch.to(self.device), generator)
        y_before, y_after = out["y_demo"].cpu(), out["y_test"].cpu()
        before, after = arm_errors(y_before, batch), arm_errors(y_after, batch)
        demo = out["demos"][0] if out["demos"] else None
        signals = demo.signals[0].cpu() if demo is not None and demo.signals is not None else None
        return Adaptation(
            fast_weights={k: out["fast"][k][0].cpu() for k in self.learner.plastic if k in out["fast"]},
            target_joint_velocities=batch.targets[0], target_hand=batch.extra["hand"][0],
            joint_velocities_before=y_before[0], joint_velocities_after=y_after[0],
            hand_before=produced_hand(y_before, batch)[0], hand_after=produced_hand(y_after, batch)[0],
            **{f"{k}_{when}": float(v[0]) for when, errs in (("before", before), ("after", after))
               for k, v in errs.items()},
            learning_signals=signals, batch=batch)


def load_run(path: str | Path, device: str = "cpu") -> TrainedModel:
    """A run directory (its latest checkpoint) or a checkpoint file, validated as ``eprop-l2l evaluate`` does,
    on ``device``."""
    from .runs.evaluation import evaluation_setup

    cfg, learner, family, meta, _, checkpoint, iteration = evaluation_setup(str(path), [f"run.device={device}"])
    return TrainedModel(learner, meta, family, cfg, Path(checkpoint), iteration)
