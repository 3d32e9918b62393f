"""The plant record of an export (``plant.json``): which plant a family's movements are scored on, with the
family's own constants, so that a reader without torch (the Lava program, :mod:`.lava.plants`) scores them as the
family does. The torch side itself scores with the family's ``errors`` and its ``primary_metric``."""

from __future__ import annotations

import inspect

from ..task_families.arm import ArmTrials
from ..task_families.arm_kinematics import PHI0, hand_position
from ..task_families.scorbot import ScorbotBrownian
from ..task_families.scorbot_kinematics import A1, A2, A3, A4, D1, D_OFFSET
from ..units import step_seconds
from .description import ExportError, Plant

SCORBOT_START = (0.0, 0.0)  # scorbot_kinematics.moving_joint_angles: the base and shoulder start at 0


def _defaults(function, names: tuple[str, ...]) -> dict:
    """The defaults ``function`` states for its parameters ``names`` (where those constants live)."""
    parameters = inspect.signature(function).parameters
    return {name: parameters[name].default for name in names}


def plant_record(family) -> Plant:
    """The plant of ``family``'s movements; a family without one is one line naming ``task.family``."""
    if isinstance(family, ArmTrials):
        return Plant(kind="two_joint_arm", step_s=step_seconds(family.dt_ms), start=tuple(PHI0),
                     geometry=_defaults(hand_position, ("l1", "l2")), metric=family.primary_metric)
    if isinstance(family, ScorbotBrownian):
        geometry = {"d1": D1, "a1": A1, "a2": A2, "a3": A3, "a4": A4, "d_offset": D_OFFSET}
        return Plant(kind="scorbot", step_s=family.kinematic_step_s, start=SCORBOT_START, geometry=geometry,
                     metric=family.primary_metric)
    raise ExportError("task.family", f"{family.name}: the export scores its held-out demonstrations on a plant (the "
                      "two-joint arm: arm_sines, arm_brownian; the ED-Scorbot: scorbot_brownian); other families are "
                      "not exported yet")

