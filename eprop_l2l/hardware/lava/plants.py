"""The plants that score an export's demonstrations, in numpy (no torch): the end-effector path of the learner's
output and the family's primary metric, from the export's plant record (``plant.json``,
:class:`eprop_l2l.hardware.description.Plant`).

* ``two_joint_arm`` (e-prop 2; ``task_families/arm_kinematics.py``): φ = start + step_s·cumsum(ω), shoulder absolute
  and elbow relative, hand (x, y) = (l1 cos φ1 + l2 cos(φ1 + φ2), l1 sin φ1 + l2 sin(φ1 + φ2));
* ``scorbot`` (natural e-prop; ``task_families/scorbot_kinematics.py``): base and shoulder angles
  θ = start + step_s·cumsum(ω), elbow and wrist at 0, end effector (x, y, z) with R = a1 + (a2 + a3 + a4) cos θ2:
  x = R cos θ1 + d sin θ1, y = −R sin θ1 + d cos θ1, z = d1 + (a2 + a3 + a4) sin θ2 (the chain written out
  term by term, as the torch side sums it, so that the two agree to float64 rounding).

Metrics, per task: ``mse_cart`` = mean over steps and coordinates of (p − p*)² (m²); ``deviation_cm`` =
100·√(mean_t ‖p − p*‖²). tests/test_lava_mirrors.py pins each path and metric to the torch families' own.

An export written before the plant record (no ``plant.json``) was scored on the two-joint arm at the readout's
step: :func:`legacy_arm` is that record.
"""

from __future__ import annotations

import math

import numpy as np

from ..description import Plant

# the two-joint arm of task_families/arm_kinematics.py: its start posture PHI0 and hand_position's l1, l2 (for
# exports without plant.json)
PHI0 = (0.0, math.pi / 2)
SEGMENTS = (0.5, 0.5)
CM_PER_M = 100.0  # scorbot_kinematics.CM_PER_M


def legacy_arm(dt_s: float) -> Plant:
    """The plant of an export without ``plant.json``: the two-joint arm at the network's step."""
    return Plant(kind="two_joint_arm", step_s=dt_s, start=PHI0, geometry=dict(zip(("l1", "l2"), SEGMENTS, strict=True)),
                 metric="mse_cart")


def joint_angles(plant: Plant, omega: np.ndarray) -> np.ndarray:
    """The moving joints' angles ``[..., T, 2]`` for their velocities ``omega [..., T, 2]`` (rad/s)."""
    return np.asarray(plant.start, np.float64) + plant.step_s * np.cumsum(np.asarray(omega, np.float64), axis=-2)


def _arm(g: dict, phi: np.ndarray) -> np.ndarray:
    shoulder, elbow = phi[..., 0], phi[..., 0] + phi[..., 1]
    return np.stack([g["l1"] * np.cos(shoulder) + g["l2"] * np.cos(elbow),
                     g["l1"] * np.sin(shoulder) + g["l2"] * np.sin(elbow)], -1)


def _scorbot(g: dict, theta: np.ndarray) -> np.ndarray:
    base, shoulder = theta[..., 0], theta[..., 1]
    # elbow = wrist = 0: the upper arm and the forearm continue the shoulder's angle
    reach = g["a1"] + g["a2"] * np.cos(shoulder) + g["a3"] * np.cos(shoulder) + g["a4"] * np.cos(shoulder)
    return np.stack([reach * np.cos(base) + g["d_offset"] * np.sin(base),
                     -reach * np.sin(base) + g["d_offset"] * np.cos(base),
                     g["d1"] + g["a2"] * np.sin(shoulder) + g["a3"] * np.sin(shoulder) + g["a4"] * np.sin(shoulder)],
                    -1)


FORWARD = {"two_joint_arm": _arm, "scorbot": _scorbot}


def end_effector(plant: Plant, angles: np.ndarray) -> np.ndarray:
    """The end effector ``[..., T, plant.dims]`` (m) at the moving joints' angles ``[..., T, 2]``."""
    return FORWARD[plant.kind](plant.geometry, np.asarray(angles, np.float64))


def path(plant: Plant, omega: np.ndarray) -> np.ndarray:
    """The end effector's path ``[..., T, plant.dims]`` (m) produced by joint velocities ``omega [..., T, 2]``."""
    return end_effector(plant, joint_angles(plant, omega))


def score(plant: Plant, produced: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The plant's metric of each path ``produced [..., T, dims]`` against ``target`` (shape ``[...]``)."""
    squared = (np.asarray(produced, np.float64) - np.asarray(target, np.float64)) ** 2
    if plant.metric == "mse_cart":
        return squared.mean((-2, -1))
    return CM_PER_M * np.sqrt(squared.sum(-1).mean(-1))  # deviation_cm
