"""Process-wide CPU settings that the entry points (CLI, demo, benchmarks, tests) apply once.

* Subnormal floats: leaky state decays (α^t v, ρ^t a, filtered traces) sink into the subnormal range and make
  x86 arithmetic on them 10-20× slower (measured: one ALIF trial 10 s → 0.7 s). Flushing them to zero changes
  values below 1e-38 (float32) only.
* Allocator: whole-trial tensors are tens of MB; glibc serves such blocks with fresh ``mmap`` pages and
  returns them on free, so every large temporary pays page faults again (measured: three elementwise ops on a
  [32, 500, 400] tensor 28 ms → 4 ms). Raising the mmap and trim thresholds keeps freed blocks for reuse.
* Threads: the time loop is a chain of small ops whose cost is dominated by dispatch; on small CPUs extra
  intra-op threads only add synchronisation (and spin badly when two processes share the cores).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def _keep_freed_memory() -> None:
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
        libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31)
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        pass


def configure_cpu(threads: int | None = None) -> None:
    torch.set_flush_denormal(True)
    _keep_freed_memory()
    if threads is not None:
        torch.set_num_threads(threads)
