"""Process-wide CPU settings that the entry points (CLI, demo, benchmarks, tests) apply once.

* Subnormal floats: leaky state decays (α^t v, ρ^t a, filtered traces) sink into the subnormal range and make
  x86 arithmetic on them 10-20× slower (measured: one ALIF trial 10 s → 0.7 s). Flushing them to zero changes
  values below 1e-38 (float32) only.
* Threads: the time loop is a chain of small ops whose cost is dominated by dispatch; on small CPUs extra
  intra-op threads only add synchronisation (and spin badly when two processes share the cores).
"""

from __future__ import annotations

import torch


def configure_cpu(threads: int | None = None) -> None:
    torch.set_flush_denormal(True)
    if threads is not None:
        torch.set_num_threads(threads)
