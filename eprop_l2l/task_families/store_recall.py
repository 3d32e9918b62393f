"""Store-recall (Bellec et al. 2018, LSNN; the working-memory task of e-prop, Bellec et al. 2019): a bit shown
with a *store* cue must be reported when a *recall* cue comes, a random number of symbols later. It needs a
memory longer than a membrane time constant — in spiking networks the slow threshold adaptation of ALIF
neurons (Bellec et al. 2019: 100 neurons, 40 % ALIF, 4 input channels at 50 Hz, 200-ms symbols).

Four input channels, ``neurons_per_channel`` Poisson neurons each: value 0, value 1, store, recall
(``n_in = 4 · neurons_per_channel``). The trial is ``n_symbols`` symbol periods of ``symbol_ms``:

* in every period but the recall period one value channel fires at ``input_rate_hz`` (a random bit; with
  ``distractors=False`` only in the store period);
* in the store period (``store`` uniform in ``[0, n_symbols − 1 − max_delay]``) the store channel fires too;
  its bit is the one to remember;
* the recall channel fires in the recall period, ``delay`` periods later (uniform in
  ``[min_delay, max_delay]``), and the value channels are silent.

Output: 2 classes (cross-entropy), the stored bit. The targets hold it (one-hot) at every step; the mask is 1
in the recall period only, so ``classification_error`` scores recall accuracy.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import torch

from ..errors import ConfigError, require_count, require_non_negative, require_positive
from ..units import per_step, whole_steps
from .base import FamilyBase, TaskBatch, bernoulli_spikes, generator_device, require_bool, spike_probability

VALUE0, VALUE1, STORE, RECALL = 0, 1, 2, 3


@dataclass(frozen=True)
class StoreRecall(FamilyBase):
    n_symbols: int = 8
    symbol_ms: float = 200.0
    min_delay: int = 1
    max_delay: int = 4
    input_rate_hz: float = 50.0
    neurons_per_channel: int = 1
    distractors: bool = True
    _: KW_ONLY
    dt_ms: float  # the run's time step (task.dt_ms): n_steps·dt_ms is the trial

    name: ClassVar[str] = "store_recall"
    loss: ClassVar[str] = "cross_entropy"
    n_out: ClassVar[int] = 2

    def __post_init__(self) -> None:
        k = self._key
        require_positive(k("dt_ms"), self.dt_ms)
        require_positive(k("symbol_ms"), self.symbol_ms)
        whole_steps(k("symbol_ms"), "a symbol", self.symbol_ms, self.dt_ms)
        require_count(k("min_delay"), self.min_delay)
        require_count(k("max_delay"), self.max_delay)
        if self.max_delay < self.min_delay:
            raise ConfigError(k("max_delay"), f"must be >= min_delay={self.min_delay}, got {self.max_delay}")
        require_count(k("n_symbols"), self.n_symbols, minimum=2)
        if self.n_symbols < self.max_delay + 1:
            raise ConfigError(k("n_symbols"), f"must be >= max_delay + 1 = {self.max_delay + 1} (store, then "
                              f"recall up to max_delay symbols later), got {self.n_symbols}")
        require_non_negative(k("input_rate_hz"), self.input_rate_hz)
        spike_probability(k("input_rate_hz"), self.input_rate_hz, self.dt_ms)
        require_count(k("neurons_per_channel"), self.neurons_per_channel)
        require_bool(k("distractors"), self.distractors)

    @property
    def n_in(self) -> int:
        return 4 * self.neurons_per_channel

    @property
    def symbol_steps(self) -> int:
        return whole_steps(self._key("symbol_ms"), "a symbol", self.symbol_ms, self.dt_ms)

    @property
    def n_steps(self) -> int:
        return self.n_symbols * self.symbol_steps

    def sample(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype = torch.float32) -> TaskBatch:
        self._check_batch_size(batch_size)
        device = generator_device(generator)
        B, S, P = batch_size, self.n_symbols, self.symbol_steps
        n_store = S - self.max_delay  # possible store periods
        store = torch.randint(0, n_store, (B,), generator=generator, device=device)
        delay = torch.randint(self.min_delay, self.max_delay + 1, (B,), generator=generator, device=device)
        recall = store + delay
        bits = torch.randint(0, 2, (B, S), generator=generator, device=device)
        slots = torch.arange(S, device=device)[None]
        is_store, is_recall = slots == store[:, None], slots == recall[:, None]
        shows_value = ~is_recall if self.distractors else is_store
        channels = torch.zeros(B, S, 4, device=device)
        channels[..., VALUE0] = (shows_value & (bits == 0)).float()
        channels[..., VALUE1] = (shows_value & (bits == 1)).float()
        channels[..., STORE] = is_store.float()
        channels[..., RECALL] = is_recall.float()
        prob = per_step(self.input_rate_hz, self.dt_ms) * channels.repeat_interleave(P, 1)
        prob = prob.repeat_interleave(self.neurons_per_channel, 2)
        inputs = bernoulli_spikes(prob, (B, S * P, self.n_in), generator)
        label = bits.gather(1, store[:, None])[:, 0]
        targets = torch.nn.functional.one_hot(label, 2).to(dtype)[:, None].expand(B, S * P, 2).contiguous()
        mask = is_recall.to(dtype).repeat_interleave(P, 1)
        return TaskBatch(inputs.to(dtype), targets, mask,
                         {"label": label, "store": store, "recall": recall, "bits": bits}, dt_ms=self.dt_ms)
