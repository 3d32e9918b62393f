"""What every task family provides: a :class:`TaskBatch` of trials sampled from a ``torch.Generator``.

Conventions shared by all families:

- one time step is the family's ``dt_ms`` (1 ms unless configured otherwise), stamped on every batch it samples
  (``TaskBatch.dt_ms``) so that whatever scores or plots the trials uses their step; tensors are time-major after
  the batch axis;
- every random draw comes from the generator passed to ``sample`` (or, for inputs that are frozen across tasks,
  from a private generator seeded with the family's ``input_seed``), never from torch's global RNG, so the same
  generator seed gives the same batch on any machine (draws are made on the generator's device);
- random numbers are drawn in a fixed dtype (float32 for spikes, float64 for continuous task parameters) and
  only the returned tensors are cast to ``dtype``, so the draws do not depend on the requested dtype.
"""

from __future__ import annotations

import dataclasses
from dataclasses import KW_ONLY, dataclass
from typing import Any, ClassVar, Protocol, runtime_checkable

import torch

from ..errors import ConfigError
from ..units import per_step


@dataclass(frozen=True)
class TaskBatch:
    """One trial for each of ``B`` tasks.

    inputs:  ``[B, T, n_in]`` input spikes (0/1) to the learning network.
    targets: ``[B, T, n_out]`` regression targets, or one-hot class targets for classification.
    mask:    ``[B, T]`` 0/1, the time steps where the loss counts.
    extra:   what the family's own objective and evaluation read (e.g. ``'hand'``, ``'label'``).
    dt_ms:   the time step the trials were sampled with (step t is at t·dt_ms ms).
    context: ``[B, T, n_context]`` what a learned error module is shown of each task (e.g. the population-coded
             target movement), or None for families without one.
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    extra: dict = dataclasses.field(default_factory=dict)
    _: KW_ONLY
    dt_ms: float
    context: torch.Tensor | None = None

    def _map(self, fn) -> TaskBatch:
        apply = lambda x: fn(x) if isinstance(x, torch.Tensor) else x  # noqa: E731
        return TaskBatch(apply(self.inputs), apply(self.targets), apply(self.mask),
                         {k: apply(v) for k, v in self.extra.items()}, dt_ms=self.dt_ms,
                         context=apply(self.context))

    def to(self, device: torch.device | str) -> TaskBatch:
        """The same trials on ``device`` (tasks are drawn on the CPU generator, then moved: same tasks anywhere)."""
        return self._map(lambda x: x.to(device))

    def select(self, index) -> TaskBatch:
        """The tasks ``index`` (a slice or index tensor over the batch axis)."""
        return self._map(lambda x: x[index])

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def n_steps(self) -> int:
        return self.inputs.shape[1]


class MetaObjective(Protocol):
    """What a family supplies to be meta-trained and evaluated one-shot (the arm families do; ``meta/`` reads
    only this): the outer objective of the test trial, the per-task metrics of a trial and their names, the
    primary metric (the held-out number, and the figure's median task), and optionally the one-shot figure
    (``one_shot_figure(path, batch, out, per_task=, index=) -> dict`` of the data behind its panels)."""

    metric_keys: tuple[str, ...]
    primary_metric: str

    def outer_loss(self, y: torch.Tensor, batch: TaskBatch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...

    def errors(self, y: torch.Tensor, batch: TaskBatch) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class TaskFamily(Protocol):
    """A distribution over tasks. ``loss`` is ``"mse"`` or ``"cross_entropy"``."""

    n_in: int
    n_out: int
    n_steps: int
    loss: str

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        ...


LOSSES: tuple[str, ...] = ("mse", "cross_entropy")


class FamilyBase:
    """Mix-in for the frozen-dataclass families: the config-key prefix and shared validation helpers."""

    name: ClassVar[str]
    loss: ClassVar[str]

    def _key(self, field_name: str) -> str:
        return f"{self.name}.{field_name}"

    def sample_rows(self, batch_size: int, generator: torch.Generator, rows: slice,
                    dtype: torch.dtype = torch.float32) -> TaskBatch:
        """The tasks ``rows`` of ``sample(batch_size, generator, dtype)``, bit for bit, with ``generator`` advanced
        as by the whole batch (one process's share of a data-parallel batch). A family whose draw is costly per
        task computes only these tasks' (:class:`~.arm.ArmTrials`)."""
        return self.sample(batch_size, generator, dtype).select(rows)

    def _check_batch_size(self, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"{self.name}.batch_size", f"must be an integer >= 1, got {batch_size!r}")


def require_int(key: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")


def require_bool(key: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise ConfigError(key, f"must be true or false, got {value!r}")


def require_probability(key: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ConfigError(key, f"must lie in [0, 1], got {value!r}")


def spike_probability(key: str, rate_hz: float, dt_ms: float, what: str = "rate") -> float:
    """Bernoulli probability per step of a Poisson process at ``rate_hz``; it must not exceed 1."""
    p = per_step(rate_hz, dt_ms)
    if p > 1.0:
        raise ConfigError(key, f"{what} {rate_hz!r} Hz gives a spike probability {p:g} > 1 per {dt_ms!r} ms step")
    return p


def bernoulli_spikes(prob: torch.Tensor | float, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    """0/1 spikes (float32) with probability ``prob`` (broadcast to ``shape``), drawn on the generator's device."""
    u = torch.rand(shape, generator=generator, device=generator.device, dtype=torch.float32)
    return (u < prob).to(torch.float32)


def generator_device(generator: torch.Generator) -> torch.device:
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    return generator.device
