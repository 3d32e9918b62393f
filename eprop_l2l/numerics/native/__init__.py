"""Native (C++) time loops for CPU tensors, built on first use with torch's extension builder and cached.

The Python loops of the cell library stay the reference and the fallback: these kernels compute the same
recursions in one call per trial instead of ~10 dispatched tensor operations per step (kernels.cpp says
which). They serve CPU float32/float64 tensors; CUDA tensors, other dtypes and forward-mode or second-order
differentiation of the spiking loop use the Python loops.

``EPROP_L2L_NATIVE=0`` disables them (``1`` makes a failed build an error instead of a one-line warning).
The build (≈ 30 s, once per machine and source version) lands in torch's extension cache
(``TORCH_EXTENSIONS_DIR``, default ``~/.cache/torch_extensions``) under a name carrying the source's hash,
so an edited source never loads a stale binary.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("kernels.cpp")
# the surrogate derivatives the kernels compute, by the number they take (cells.spike names the same shapes)
SURROGATE_CODES = {"triangle": 0, "fast_sigmoid": 1}
DTYPES = (torch.float32, torch.float64)
# A build takes ~30 s (minutes on a loaded machine): a lock file older than this was left by a killed build, and a
# load waits at most this long for a younger one (a cache copied while a process held its lock has a fresh one).
STALE_LOCK_SECONDS = 15 * 60
# Where the binary exists, a lock's owner only re-checks the build (about a second): a longer wait means no owner.
RECHECK_WAIT_SECONDS = 60
POLL_SECONDS = 0.5


def _setting() -> str:
    value = os.environ.get("EPROP_L2L_NATIVE", "auto").strip().lower()
    return {"0": "off", "false": "off", "off": "off", "1": "on", "true": "on", "on": "on"}.get(value, "auto")


def _vector_flags() -> list[str]:
    """AVX2 + FMA where this CPU has them (x86 Linux), read from /proc/cpuinfo. The flags are part of the build's
    name, so a cache shared between machines with different CPUs never loads a binary built for another one."""
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        return []
    return ["-mavx2", "-mfma"] if {"avx2", "fma"} <= flags else []


@cache
def _load():
    from torch.utils.cpp_extension import _get_build_directory, load

    # -fno-trapping-math lets GCC turn the comparisons of ψ's refractory mask and ramp into vector selects (with
    # floating-point traps assumed possible it keeps them as branches, ~10× slower); values are unchanged
    cflags = ["-O3", "-fno-trapping-math", *_vector_flags()]
    digest = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + " ".join(cflags).encode())
    name = f"eprop_l2l_kernels_{digest.hexdigest()[:12]}"
    build_dir = Path(_get_build_directory(name, verbose=False))
    library, lock = build_dir / f"{name}.so", build_dir / "lock"
    if library.exists():
        # torch's load() would take the build lock only to re-check a build whose name already pins its source;
        # importing the binary directly never waits on a lock (a copied cache's lock waited a CI run out)
        wait_for_lock(lock, RECHECK_WAIT_SECONDS)
        return import_library(name, library)
    wait_for_lock(lock, STALE_LOCK_SECONDS)  # another process may be building it now
    if library.exists():
        return import_library(name, library)
    print(f"eprop-l2l: building the native time loops (once per machine, ~30 s): {SOURCE.name}", file=sys.stderr)
    return load(name=name, sources=[str(SOURCE)], extra_cflags=cflags, verbose=False)


def import_library(name: str, library: Path):
    """The built extension module, imported from its file."""
    spec = importlib.util.spec_from_file_location(name, library)
    extension = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(extension)
    return extension


def wait_for_lock(lock: Path, patience: float) -> None:
    """torch's extension builder waits, silently and for ever, while its ``lock`` file exists; a killed build
    leaves one behind, and so does a cache copied while a process held it. Wait (one line on stderr) while another
    process may own the lock; remove it once it is older than any build or has outlived ``patience`` seconds."""
    started = time.monotonic()
    announced = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        waited = time.monotonic() - started
        if age > STALE_LOCK_SECONDS or waited >= patience:
            print(f"eprop-l2l: removing a build lock nobody released ({age / 60:.0f} min old, waited {waited:.0f} s): "
                  f"{lock}", file=sys.stderr)
            lock.unlink(missing_ok=True)
            return
        if not announced:
            print(f"eprop-l2l: waiting for another process's build of the native loops (lock: {lock})",
                  file=sys.stderr)
            announced = True
        time.sleep(POLL_SECONDS)


@cache
def module():
    """The compiled module, or None where disabled or where the build failed (one warning)."""
    setting = _setting()
    if setting == "off":
        return None
    try:
        return _load()
    except Exception as error:  # noqa: BLE001 — any build failure falls back to the Python loops
        if setting == "on":
            raise RuntimeError(f"EPROP_L2L_NATIVE=1 but the native kernels did not build: {error}") from error
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        warnings.warn(f"native time loops unavailable ({first_line[:200]}); using the Python loops", stacklevel=2)
        return None


_DISABLED: list[bool] = []


@contextmanager
def disabled() -> Iterator[None]:
    """Within this block the Python loops run even where the kernels are built (tests compare the two)."""
    _DISABLED.append(True)
    try:
        yield
    finally:
        _DISABLED.pop()


def usable(*tensors: torch.Tensor | None) -> bool:
    """True when every given tensor is a CPU tensor of a supported dtype, no ``torch.func`` transform is active
    (the kernels are opaque to vmap/jvp) and the kernels are built."""
    if _DISABLED or torch._C._are_functorch_transforms_active():
        return False
    present = [t for t in tensors if t is not None]
    if any(t.device.type != "cpu" or t.dtype not in DTYPES for t in present):
        return False
    return module() is not None
