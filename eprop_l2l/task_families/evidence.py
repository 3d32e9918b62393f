"""Evidence accumulation / cue counting (spec D2, Bellec et al. 2020 Fig. 3).

``n_in`` input channels in 4 equal groups: left cue, right cue, recall cue, background (channels
``[0, g)``, ``[g, 2g)``, ``[2g, 3g)``, ``[3g, 4g)`` with ``g = n_in // 4``). One time step is 1 ms.

Trial timeline (steps = ms)::

    | silence_ms | cue 0 | gap | cue 1 | ... | cue n-1 | delay_ms ... | recall_ms |
                 ^ onsets every cue_spacing_ms; each cue lasts cue_ms

    n_steps = silence_ms + (n_cues - 1) * cue_spacing_ms + cue_ms + delay_ms + recall_ms

With the defaults (50 + 6·150 + 100 + 1050 + 150) this is the paper's T = n_cues·150 + 1200 = 2250 ms, and
it stays n_cues·150 + 1200 for any ``n_cues`` as long as the other fields keep their defaults.

Per trial one side is chosen uniformly as the likely one; each cue independently comes from it with probability
``p_majority`` and from the other side otherwise. During a cue its group fires at ``input_rate_hz``; the recall
group fires at ``recall_hz`` in the last ``recall_ms`` steps; the background group fires at ``background_hz``
throughout. Label = the side with more cues (0 left, 1 right; ``n_cues`` is odd, so there are no ties). The
targets are the one-hot label at every step, and the loss (cross-entropy) counts in the last ``recall_ms`` steps.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError, require_count, require_non_negative
from ..units import per_step
from .base import FamilyBase, TaskBatch, bernoulli_spikes, generator_device, require_probability, spike_probability

LEFT, RIGHT, RECALL, BACKGROUND = 0, 1, 2, 3


@dataclass(frozen=True)
class EvidenceAccumulation(FamilyBase):
    n_in: int = 40
    n_cues: int = 7
    cue_ms: int = 100
    cue_spacing_ms: int = 150
    silence_ms: int = 50
    delay_ms: int = 1050
    recall_ms: int = 150
    input_rate_hz: float = 40.0
    recall_hz: float = 40.0
    background_hz: float = 10.0
    p_majority: float = 0.7
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): n_steps·dt_ms is the trial

    name: ClassVar[str] = "evidence"
    loss: ClassVar[str] = "cross_entropy"
    n_out: ClassVar[int] = 2
    RECIPE_STEP_MS: ClassVar[float] = 1.0

    def __post_init__(self) -> None:
        k = self._key
        if self.dt_ms != self.RECIPE_STEP_MS:  # its *_ms fields are counted in steps
            raise ConfigError(k("dt_ms"), f"the task's durations are 1-ms steps, got {self.dt_ms:g} ms")
        require_count(k("n_in"), self.n_in, minimum=4)
        if self.n_in % 4:
            raise ConfigError(k("n_in"), f"must be a multiple of 4 (left, right, recall, background), got {self.n_in}")
        require_count(k("n_cues"), self.n_cues)
        if self.n_cues % 2 == 0:
            raise ConfigError(k("n_cues"), f"must be odd so that there are no ties, got {self.n_cues}")
        require_count(k("cue_ms"), self.cue_ms)
        require_count(k("cue_spacing_ms"), self.cue_spacing_ms)
        if self.cue_spacing_ms < self.cue_ms:
            raise ConfigError(k("cue_spacing_ms"), f"must be >= cue_ms ({self.cue_ms}), got {self.cue_spacing_ms}")
        require_count(k("silence_ms"), self.silence_ms, minimum=0)
        require_count(k("delay_ms"), self.delay_ms, minimum=0)
        require_count(k("recall_ms"), self.recall_ms)
        for rate in ("input_rate_hz", "recall_hz", "background_hz"):
            require_non_negative(k(rate), getattr(self, rate))
            spike_probability(k(rate), getattr(self, rate), self.dt_ms)
        require_non_negative(k("p_majority"), self.p_majority)
        require_probability(k("p_majority"), self.p_majority)

    @property
    def n_steps(self) -> int:
        """silence_ms + (n_cues - 1) * cue_spacing_ms + cue_ms + delay_ms + recall_ms (1 ms steps)."""
        return self.silence_ms + (self.n_cues - 1) * self.cue_spacing_ms + self.cue_ms + self.delay_ms + self.recall_ms

    @property
    def group_size(self) -> int:
        return self.n_in // 4

    @property
    def groups(self) -> dict[str, slice]:
        """Input channels of each group."""
        g = self.group_size
        return {"left": slice(0, g), "right": slice(g, 2 * g), "recall": slice(2 * g, 3 * g),
                "background": slice(3 * g, 4 * g)}

    @property
    def cue_onsets(self) -> tuple[int, ...]:
        """First step of each cue."""
        return tuple(self.silence_ms + i * self.cue_spacing_ms for i in range(self.n_cues))

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        self._check_batch_size(batch_size)
        device = generator_device(generator)
        B, T, f32 = batch_size, self.n_steps, torch.float32

        likely_right = torch.rand(B, generator=generator, device=device, dtype=f32) < 0.5
        p_right = torch.where(likely_right, self.p_majority, 1.0 - self.p_majority)
        cues = (torch.rand(B, self.n_cues, generator=generator, device=device, dtype=f32) < p_right[:, None]).long()
        label = (2 * cues.sum(dim=1) > self.n_cues).long()

        p_cue = per_step(self.input_rate_hz, self.dt_ms)
        prob = torch.zeros(B, T, 4, device=device, dtype=f32)  # per-group spike probability
        right = cues.to(f32) * p_cue  # [B, n_cues]
        left = p_cue - right
        for i, onset in enumerate(self.cue_onsets):
            window = slice(onset, onset + self.cue_ms)
            prob[:, window, LEFT] = left[:, i, None]
            prob[:, window, RIGHT] = right[:, i, None]
        prob[:, T - self.recall_ms:, RECALL] = per_step(self.recall_hz, self.dt_ms)
        prob[:, :, BACKGROUND] = per_step(self.background_hz, self.dt_ms)
        prob = prob.repeat_interleave(self.group_size, dim=2)  # [B, T, n_in]
        inputs = bernoulli_spikes(prob, (B, T, self.n_in), generator).to(dtype)

        targets = torch.nn.functional.one_hot(label, 2).to(dtype)[:, None, :].expand(B, T, 2).contiguous()
        mask = torch.zeros(B, T, device=device, dtype=dtype)
        mask[:, T - self.recall_ms:] = 1
        return TaskBatch(
            inputs=inputs,
            targets=targets,
            mask=mask,
            extra={
                "label": label,  # [B] long, 0 left, 1 right
                "cues": cues,  # [B, n_cues] long, side of each cue (0 left, 1 right)
                "likely_side": likely_right.long(),  # [B] long, the side with cue probability p_majority
            },
            dt_ms=self.dt_ms,
        )
