"""The two-joint arm's kinematics (e-prop 2, Bellec et al. 2019; docs/equations.md): joint angles from
velocities, the hand position, the hand path, its gradient through the arm's Jacobian and the closed-form
inverse. Segments 0.5 + 0.5, start posture (0, π/2), joint 2 the relative elbow angle. The families
(``arm.py``), their objective (``arm_objective.py``) and figure import it; it imports none of them."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError
from ..units import step_seconds

PHI0 = (0.0, math.pi / 2)


def joint_angles(omega: torch.Tensor, phi0=PHI0, *, dt_ms: float) -> torch.Tensor:
    """φ(t) = φ(0) + δt·cumsum(ω) for joint velocities ``omega [..., T, 2]`` (rad/s) and a step of ``dt_ms``."""
    dt = step_seconds(dt_ms)
    return torch.as_tensor(phi0, dtype=omega.dtype, device=omega.device) + dt * torch.cumsum(omega, -2)


def hand_position(phi: torch.Tensor, l1: float = 0.5, l2: float = 0.5) -> torch.Tensor:
    """(x, y) of the hand for angles ``[..., 2]`` (shoulder absolute, elbow relative)."""
    shoulder, elbow = phi[..., 0], phi[..., 0] + phi[..., 1]
    return torch.stack([l1 * torch.cos(shoulder) + l2 * torch.cos(elbow),
                        l1 * torch.sin(shoulder) + l2 * torch.sin(elbow)], -1)


def arm_forward(omega: torch.Tensor, *, dt_ms: float) -> torch.Tensor:
    """Hand path ``[..., T, 2]`` produced by joint velocities ``[..., T, 2]`` (steps of ``dt_ms``) from the start
    posture."""
    return hand_position(joint_angles(omega, dt_ms=dt_ms))


def arm_path_gradient(omega: torch.Tensor, deviation: torch.Tensor, *, dt_ms: float, l1: float = 0.5,
                      l2: float = 0.5) -> torch.Tensor:
    """∂E/∂ω ``[..., T, 2]`` of any hand-path loss E whose gradient on the hand path is ``deviation`` = ∂E/∂p
    ``[..., T, 2]`` (for E = ½Σ_t |p − p*|²: p − p*): the plant's Jacobian J^t = ∂p^t/∂φ^t transposed onto it,
    summed over the later steps, because φ^t integrates every ω^{t'≤t}:  ∂E/∂ω^{t'} = δt Σ_{t≥t'} J^tᵀ ∂E/∂p^t.
    Closed form of the two-joint kinematics (∂x/∂φ1 = −y, ∂y/∂φ1 = x, ∂x/∂φ2 = −l2 sin φ_e, ∂y/∂φ2 = l2 cos φ_e
    with φ_e = φ1 + φ2); ``torch.autograd`` through :func:`arm_forward` gives the same (tests)."""
    phi = joint_angles(omega, dt_ms=dt_ms)
    hand = hand_position(phi, l1, l2)
    elbow = phi[..., 0] + phi[..., 1]
    dx, dy = deviation[..., 0], deviation[..., 1]
    per_angle = torch.stack([-hand[..., 1] * dx + hand[..., 0] * dy,
                             l2 * (-torch.sin(elbow) * dx + torch.cos(elbow) * dy)], -1)
    return step_seconds(dt_ms) * per_angle.flip(-2).cumsum(-2).flip(-2)


def joint_velocities_from_hand(hand: torch.Tensor, *, dt_ms: float, phi0=PHI0, l1: float = 0.5, l2: float = 0.5,
                               singular: float = 1e-6) -> torch.Tensor:
    """The inverse of :func:`arm_forward`: joint velocities ``[..., T, 2]`` (rad/s) whose hand path is ``hand
    [..., T, 2]`` (step t is the posture after t + 1 steps of ``dt_ms`` from ``phi0``). Each posture is solved in
    closed form on the start posture's elbow branch (relative elbow angle in [0, π]: φ2 = arccos((r² − l1² −
    l2²)/(2 l1 l2)), φ1 = atan2(y, x) − atan2(l2 sin φ2, l1 + l2 cos φ2)); the shoulder angle is unwrapped, so
    ω is the smallest rotation between consecutive postures. Where the hand is within ``singular`` of the
    shoulder (the folded arm, l1 = l2: every shoulder angle gives that hand position), the shoulder angle is
    interpolated between its neighbours. Unreachable points raise a ConfigError naming the first such step."""
    r2 = (hand**2).sum(-1)
    cos_elbow = (r2 - l1**2 - l2**2) / (2 * l1 * l2)
    bad = (cos_elbow.abs() > 1 + 1e-12).nonzero()
    if len(bad):
        step = bad[0].tolist()
        raise ConfigError("hand_path", f"step {step[-1]} is out of the arm's reach (distance from the shoulder "
                          f"{float(r2[tuple(step)].sqrt()):.4g}, reach [{abs(l1 - l2):g}, {l1 + l2:g}])")
    elbow = torch.arccos(cos_elbow.clamp(-1.0, 1.0))
    shoulder = torch.atan2(hand[..., 1], hand[..., 0]) - torch.atan2(l2 * torch.sin(elbow), l1 + l2 * torch.cos(elbow))
    start = torch.as_tensor(phi0, dtype=torch.float64)
    # the shoulder angle, unwrapped along the valid steps and interpolated over the singular ones
    flat = shoulder.detach().to(torch.float64).cpu().reshape(-1, shoulder.shape[-1]).numpy()
    valid = (r2.detach().cpu().reshape(flat.shape) >= singular**2).numpy()
    import numpy as np

    steps = np.arange(-1, flat.shape[-1])
    for row, ok in zip(flat, valid, strict=True):
        known = np.concatenate([[float(start[0])], row[ok]])
        known = known[0] + np.concatenate([[0.0], np.cumsum(np.remainder(np.diff(known) + np.pi, 2 * np.pi) - np.pi)])
        at = np.concatenate([[-1], np.nonzero(ok)[0]])
        row[:] = np.interp(steps, at, known)[1:]
        if len(at) > 1 and at[-1] < len(row) - 1:  # singular up to the end: continue the last rotation
            row[at[-1] + 1 :] = known[-1] + (known[-1] - known[-2]) / (at[-1] - at[-2]) * (steps[at[-1] + 2 :] - at[-1])
    shoulder = torch.from_numpy(flat).reshape(shoulder.shape).to(hand.dtype).to(hand.device)
    angles = torch.stack([shoulder, elbow], -1)
    previous = torch.cat([start.to(hand.dtype).to(hand.device).expand_as(angles[..., :1, :]), angles[..., :-1, :]],
                         -2)
    return (angles - previous) / step_seconds(dt_ms)
