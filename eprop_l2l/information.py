"""The information contract of inner rules: what a rule is given of the demonstration.

A one-shot comparison is fair only if every compared rule sees the same things. Each inner rule therefore
declares, as a set of the names below, what it reads; the meta-learner hands it a demonstration batch from
which everything undeclared is withheld (``withhold``), the declaration is written into every evaluation
(``metrics.json``) and printed with its table. The eligibility traces of e-prop, the learner's own weights and
its readout are local to the learner and are not listed: every rule has them.
"""

from __future__ import annotations

import dataclasses

import torch

# name -> what it is (for the arm families in parentheses)
INFORMATION: dict[str, str] = {
    "target_path": "the demonstrated movement (the target hand path): population-coded as the family's context "
                   "for a learned module, in coordinates for the hand-path objectives",
    "produced_path": "what the learner's own output does to the plant (the hand path it produces through the arm)",
    "plant_jacobian": "the plant's Jacobian ∂p/∂y, through which a hand-path error is carried back to the outputs",
    "motor_targets": "the target outputs y* of the learner (the target joint velocities ω*) and whatever else "
                     "the family derives from them (the target joint angles)",
    "learner_spikes": "the learning network's spikes z^t, read by the signal source",
    "clock": "the learning network's input spikes x^t, read by the signal source",
}


def check(information: frozenset[str]) -> frozenset[str]:
    unknown = sorted(set(information) - set(INFORMATION))
    if unknown:
        raise ValueError(f"unknown information {unknown} (known: {', '.join(INFORMATION)})")
    return frozenset(information)


def describe(information: frozenset[str]) -> str:
    """One line for tables: the declared names in the vocabulary's order."""
    return ", ".join(name for name in INFORMATION if name in information) or "nothing"


def _poisoned(x):
    return torch.full_like(x, float("nan")) if isinstance(x, torch.Tensor) else x


def withhold(batch, information: frozenset[str], target_key: str | None = None):
    """``batch`` as a rule that declared ``information`` may see it: undeclared motor targets are NaN (a rule
    that reads them anyway produces a non-finite update, which the tests detect), an undeclared context is
    removed. ``extra[target_key]`` (the target path in coordinates, named by the family's plant) is NaN unless
    the target path is declared; every other entry of ``extra`` is the family's scoring data derived from the
    motor targets (the arm's target angles) and is NaN unless they are declared."""
    motor = "motor_targets" in information
    targets = batch.targets if motor else _poisoned(batch.targets)
    context = batch.context if "target_path" in information else None
    extra = {k: (v if (("target_path" in information) if k == target_key else motor) else _poisoned(v))
             for k, v in batch.extra.items()}
    return dataclasses.replace(batch, targets=targets, context=context, extra=extra)
