"""Copy-repeat (Graves et al. 2014, the Neural Turing Machine's "repeat copy"; the long-memory task of e-prop 3,
Bellec et al. 2019): see a random binary pattern, then a repeat cue, then write the pattern out ``n_repeats``
times.

Channels: ``n_in = n_bits + 1`` — the pattern bits, then the repeat cue. Outputs: ``n_bits``. One *frame*
(one column of the pattern) lasts ``frame_steps`` steps (1 for LSTMs; several for spiking networks). Trial::

    | pattern: L frames | cue: cue_frames | output: n_repeats · L frames |

    n_steps = (L · (1 + n_repeats) + cue_frames) · frame_steps

Each pattern bit is 0 or 1 with probability ½; during the pattern a bit's channel is 1 for the whole frame
(inputs are 0/1, deterministic given the pattern), during the cue the cue channel is 1. The targets are the
pattern, repeated, during the output phase and 0 before it; the loss (MSE) counts in the output phase only.
``pattern_length`` and ``n_repeats`` are the curriculum parameters (``eprop-l2l compare`` grows the first).
:meth:`CopyRepeat.bit_error` scores a trial: the readout averaged over each output frame, thresholded at ½.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from ..errors import require_count, require_positive
from .base import FamilyBase, TaskBatch, generator_device


@dataclass(frozen=True)
class CopyRepeat(FamilyBase):
    n_bits: int = 8
    pattern_length: int = 5
    n_repeats: int = 2
    frame_steps: int = 1
    cue_frames: int = 1
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): n_steps·dt_ms is the trial

    name: ClassVar[str] = "copy_repeat"
    loss: ClassVar[str] = "mse"

    def __post_init__(self) -> None:
        k = self._key
        require_count(k("n_bits"), self.n_bits)
        require_count(k("pattern_length"), self.pattern_length)
        require_count(k("n_repeats"), self.n_repeats)
        require_count(k("frame_steps"), self.frame_steps)
        require_count(k("cue_frames"), self.cue_frames)
        require_positive(k("dt_ms"), self.dt_ms)

    @property
    def n_in(self) -> int:
        return self.n_bits + 1

    @property
    def n_out(self) -> int:
        return self.n_bits

    @property
    def n_frames(self) -> int:
        return self.pattern_length * (1 + self.n_repeats) + self.cue_frames

    @property
    def n_steps(self) -> int:
        return self.n_frames * self.frame_steps

    @property
    def output_start(self) -> int:
        """First step of the output phase."""
        return (self.pattern_length + self.cue_frames) * self.frame_steps

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        self._check_batch_size(batch_size)
        device = generator_device(generator)
        B, L, F = batch_size, self.pattern_length, self.frame_steps
        pattern = (torch.rand(B, L, self.n_bits, generator=generator, device=device) < 0.5).to(torch.float32)
        frames_in = torch.zeros(B, self.n_frames, self.n_in, device=device)
        frames_in[:, :L, : self.n_bits] = pattern
        frames_in[:, L : L + self.cue_frames, self.n_bits] = 1.0
        frames_out = torch.zeros(B, self.n_frames, self.n_bits, device=device)
        frames_out[:, L + self.cue_frames :] = pattern.repeat(1, self.n_repeats, 1)
        frame_mask = torch.zeros(B, self.n_frames, device=device)
        frame_mask[:, L + self.cue_frames :] = 1.0
        inputs = frames_in.repeat_interleave(F, 1)
        targets = frames_out.repeat_interleave(F, 1)
        mask = frame_mask.repeat_interleave(F, 1)
        return TaskBatch(inputs.to(dtype), targets.to(dtype), mask.to(dtype),
                         {"pattern": pattern.to(torch.long)}, dt_ms=self.dt_ms)

    def bit_error(self, y: torch.Tensor, batch: TaskBatch) -> torch.Tensor:
        """Fraction of wrong output bits: per output frame, the readout averaged over the frame's steps and
        thresholded at ½, against the pattern."""
        start, F = self.output_start, self.frame_steps
        frames = y[:, start:].reshape(y.shape[0], -1, F, self.n_bits).mean(2)
        target = batch.targets[:, start:].reshape(y.shape[0], -1, F, self.n_bits)[:, :, 0]
        return ((frames > 0.5).to(target.dtype) != target).to(y.dtype).mean()
