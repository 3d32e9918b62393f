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
    "target_path": "the family's context: the coded demonstration (the target hand path)",
    "motor_targets": "the target outputs y* of the learner (the target joint velocities ω*)",
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


def withhold(batch, information: frozenset[str]):
    """``batch`` as a rule that declared ``information`` may see it: undeclared motor targets are NaN (a rule
    that reads them anyway produces a non-finite update, which the tests detect), an undeclared context is
    removed."""
    targets = batch.targets if "motor_targets" in information else torch.full_like(batch.targets, float("nan"))
    context = batch.context if "target_path" in information else None
    return dataclasses.replace(batch, targets=targets, context=context)
