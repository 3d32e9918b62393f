"""The ED-Scorbot's forward kinematics (natural e-prop, Ortner et al. 2025; the authors' ``online_learning_robot``).

Kinematics (positions in metres; angles θ = (base, shoulder, elbow, wrist), the recipe's joint angles with its
sign convention folded in):

    R = a1 + a2 cos θ2 + a3 cos(θ2 + θ3) + a4 cos(θ2 + θ3 + θ4)
    x = R cos θ1 + d sin θ1,   y = −R sin θ1 + d cos θ1,   z = d1 + a2 sin θ2 + a3 sin(θ2 + θ3) + a4 sin(θ2 + θ3 + θ4)

with d1 = 0.3585, a1 = 0.05, a2 = 0.30, a3 = 0.35, a4 = 0.22, d = −0.033 (a rotation of the base about z, an
offset, then a planar chain in the vertical plane; the tests compare homogeneous transforms). Only the base and
the shoulder move; the elbow and wrist stay at 0 (stretched). Start posture (0, 0): the hand at
(0.92, −0.033, 0.3585) m.
"""

from __future__ import annotations

import torch

D1, A1, A2, A3, A4, D_OFFSET = 0.3585, 0.05, 0.30, 0.35, 0.22, -0.033  # metres
CM_PER_M = 100.0
JOINT_NAMES = ("base", "shoulder")


def scorbot_position(theta: torch.Tensor) -> torch.Tensor:
    """End-effector position ``[..., 3]`` (m) for joint angles ``[..., 4]`` (base, shoulder, elbow, wrist)."""
    base, shoulder, elbow, wrist = theta.unbind(-1)
    upper, fore = shoulder + elbow, shoulder + elbow + wrist
    reach = A1 + A2 * torch.cos(shoulder) + A3 * torch.cos(upper) + A4 * torch.cos(fore)
    return torch.stack([reach * torch.cos(base) + D_OFFSET * torch.sin(base),
                        -reach * torch.sin(base) + D_OFFSET * torch.cos(base),
                        D1 + A2 * torch.sin(shoulder) + A3 * torch.sin(upper) + A4 * torch.sin(fore)], -1)


def moving_joint_angles(omega: torch.Tensor, step_s: float) -> torch.Tensor:
    """Base and shoulder angles ``[..., T, 2]`` from their velocities (start 0, one kinematic step per step)."""
    return step_s * torch.cumsum(omega, -2)


def hand_path(angles: torch.Tensor) -> torch.Tensor:
    """The end effector's path ``[..., T, 3]`` for base and shoulder angles ``[..., T, 2]`` (elbow, wrist 0)."""
    return scorbot_position(torch.cat([angles, torch.zeros_like(angles)], -1))
