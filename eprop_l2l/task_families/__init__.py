"""Task distributions: each family samples reproducible batches of tasks from a ``torch.Generator``.

``make_task_family(name, **fields)`` builds one by name (see ``FAMILIES``); every field is validated and a bad
value raises :class:`eprop_l2l.errors.ConfigError` naming ``<name>.<field>``.
"""

from __future__ import annotations

import dataclasses

from ..errors import ConfigError
from .arm import ArmBrownian, ArmSines
from .base import TaskBatch, TaskFamily
from .copy_repeat import CopyRepeat
from .evidence import EvidenceAccumulation
from .scorbot import ScorbotBrownian
from .sines import SumOfSines
from .store_recall import StoreRecall

FAMILIES: dict[str, type] = {
    ArmSines.name: ArmSines,
    ArmBrownian.name: ArmBrownian,
    ScorbotBrownian.name: ScorbotBrownian,
    EvidenceAccumulation.name: EvidenceAccumulation,
    SumOfSines.name: SumOfSines,
    CopyRepeat.name: CopyRepeat,
    StoreRecall.name: StoreRecall,
}


def make_task_family(name: str, **kwargs) -> TaskFamily:
    """The family registered as ``name`` with the given fields (the others keep their defaults)."""
    if not isinstance(name, str) or name not in FAMILIES:
        raise ConfigError("task", f"unknown task family {name!r} (choose from {', '.join(sorted(FAMILIES))})")
    cls = FAMILIES[name]
    fields = {f.name for f in dataclasses.fields(cls) if f.init}
    for key in kwargs:
        if key not in fields:
            raise ConfigError(f"{name}.{key}", f"unknown field (choose from {', '.join(sorted(fields))})")
    return cls(**kwargs)


__all__ = [
    "FAMILIES", "ArmBrownian", "ArmSines", "CopyRepeat", "EvidenceAccumulation", "ScorbotBrownian", "StoreRecall",
    "SumOfSines",
    "TaskBatch", "TaskFamily", "make_task_family",
]
