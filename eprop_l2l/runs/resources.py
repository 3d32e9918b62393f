"""How much memory a configuration needs, against what the machine has, checked before anything is written.

The estimate (float32, per process) follows where a meta-iteration's memory goes: the per-task fast weights
(``B·n_rec²`` for a plastic ``w_rec``, with the ΔW factors, the update and their gradients: ~14 copies per inner
update) and the trial activations kept for the backward pass (``B·T·(neurons + inputs)``: ~12 copies per trial,
``n_updates + 1`` trials). Validation and the one-shot evaluation run without a graph (~1/3 of that). Against
the measured peak RSS growth of one meta-iteration (tiny preset with N = 200-800, T = 100-1000, B = 4-16, an
error module of 12-400 neurons) the per-task terms are 1.2-1.3× the measurement: a refusal is never far off.
A configuration whose estimate exceeds the available memory (``MemAvailable``, and the cgroup limit when one is
set; the free memory of the GPU for ``run.device=cuda``) is refused naming the key whose value drives the
estimate; ``run.memory_check=false`` turns the check off.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..errors import ConfigError
from ..inner_loop.registry import get_rule

BYTES = 4  # float32
FAST_COPIES = 14  # per-task fast weights: W − ηΔW, ΔW, its factors' products and their gradients
ACTIVATION_COPIES = 12  # per trial and neuron-step, kept for the backward pass
NO_GRAD_FRACTION = 1 / 3  # validation / evaluation: no graph
FIXED_BYTES = 600 * 2**20  # the interpreter, torch, the task family


def _format(n: float) -> str:
    for unit, size in (("TB", 2**40), ("GB", 2**30), ("MB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n / 2**10:.3g} kB"


@dataclasses.dataclass(frozen=True)
class Sizes:
    n_rec: int
    n_module: int
    n_in: int
    n_out: int
    n_context: int
    n_steps: int
    n_updates: int
    plastic: tuple[str, ...]
    batch: int  # tasks per process and meta-iteration
    validation: int  # validation tasks per process
    evaluation: int  # tasks per evaluation batch


def sizes(cfg, family, world_size: int = 1) -> Sizes:
    e = cfg.error_module
    # the error module runs only for a rule that reads its signals
    n_module = e.n_rec if (e.kind == "learned" and get_rule(cfg.inner.rule, "inner.rule").reads_source) else 0
    return Sizes(cfg.model.n_rec, n_module, family.n_in, family.n_out, family.n_context * e.use_context,
                 cfg.task.n_steps, cfg.inner.n_updates, tuple(cfg.inner.plastic),
                 max(1, cfg.optim.batch_size // world_size), max(1, cfg.optim.n_validation_tasks // world_size),
                 min(cfg.eval.batch_size, cfg.eval.n_tasks))


def _per_task(s: Sizes) -> tuple[float, float]:
    """Elements per task: fast weights, activations (both with a graph)."""
    plastic = {"w_rec": s.n_rec * s.n_rec, "w_in": s.n_rec * s.n_in, "w_out": s.n_rec * s.n_out}
    fast = FAST_COPIES * sum(plastic.get(k, 0) for k in s.plastic) * s.n_updates
    trials = s.n_updates + 1
    activations = ACTIVATION_COPIES * s.n_steps * (s.n_rec + s.n_module + s.n_in + s.n_out + s.n_context) * trials
    return float(fast), float(activations)


def estimate(s: Sizes) -> dict[str, float]:
    """Bytes by phase: ``training`` (one meta-iteration with its graph, plus the validation batch it holds),
    ``validation`` and ``evaluation`` (no graph); each includes the meta-parameters with Adam's moments."""
    fast, activations = _per_task(s)
    meta = (s.n_rec * (s.n_rec + s.n_in + s.n_out)
            + s.n_module * (s.n_module + s.n_context + s.n_rec + s.n_in) + s.n_module * s.n_rec)
    static = 4 * meta * BYTES + FIXED_BYTES
    held = s.validation * s.n_steps * (s.n_in + s.n_out + s.n_context) * BYTES  # the validation batch
    per_task = (fast + activations) * BYTES
    return {"training": static + held + s.batch * per_task,
            "validation": static + held + s.validation * per_task * NO_GRAD_FRACTION,
            "evaluation": static + s.evaluation * per_task * NO_GRAD_FRACTION}


PHASE_KEYS = {"training": "optim.batch_size", "validation": "optim.n_validation_tasks",
              "evaluation": "eval.batch_size"}


def _culprit(s: Sizes, phase: str) -> str:
    """The key whose value, set to a small one, lowers the phase's estimate the most."""
    small = {"model.n_rec": dataclasses.replace(s, n_rec=min(s.n_rec, 100)),
             "error_module.n_rec": dataclasses.replace(s, n_module=min(s.n_module, 100)),
             "task.n_steps": dataclasses.replace(s, n_steps=min(s.n_steps, 100)),
             "task.n_pop_per_dim": dataclasses.replace(s, n_context=min(s.n_context, 200)),
             "inner.n_updates": dataclasses.replace(s, n_updates=min(s.n_updates, 1)),
             "optim.batch_size": dataclasses.replace(s, batch=min(s.batch, 4)),
             "optim.n_validation_tasks": dataclasses.replace(s, validation=min(s.validation, 4)),
             "eval.batch_size": dataclasses.replace(s, evaluation=min(s.evaluation, 4))}
    gains = {key: estimate(s)[phase] / max(estimate(other)[phase], 1.0) for key, other in small.items()}
    return max(gains, key=gains.get)


def _cgroup_limit() -> float | None:
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            raw = Path(limit_file).read_text().strip()
            if raw == "max" or int(raw) >= 2**60:
                return None
            return float(int(raw) - int(Path(usage_file).read_text().strip()))
        except (OSError, ValueError):
            continue
    return None


def available_memory(device: str = "cpu") -> tuple[float, str] | None:
    """Bytes available to this process and where the number comes from; None when unknown."""
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            return None
        index = int(device.split(":")[1]) if ":" in device else torch.cuda.current_device()
        free, _ = torch.cuda.mem_get_info(index)
        return float(free), f"free on {device}"
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = float(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = float(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
        except (ValueError, OSError, AttributeError):
            return None
    limit = _cgroup_limit()
    if limit is not None and limit < found:
        return limit, "left under the cgroup memory limit"
    return found, "available"


def check_memory(cfg, family, world_size: int = 1, phases: tuple[str, ...] = ("training", "validation", "evaluation"),
                 device: str | None = None) -> None:
    """Refuse (one line naming the key) when a phase's estimate exceeds the available memory. Processes of one
    machine share it (``LOCAL_WORLD_SIZE``)."""
    if not cfg.run.memory_check:
        return
    device = device or cfg.run.device
    found = available_memory(device)
    if found is None:
        return
    available, source = found
    s = sizes(cfg, family, world_size)
    raw = os.environ.get("LOCAL_WORLD_SIZE", "1").strip()
    local = 1 if device.startswith("cuda") or not raw.isdigit() else max(1, int(raw))
    needs = estimate(s)
    for phase in phases:
        need = needs[phase] * local
        if need > available:
            key = _culprit(s, phase)
            procs = f" for {local} processes" if local > 1 else ""
            others = ", ".join(k for k in (PHASE_KEYS[phase], "model.n_rec", "task.n_steps") if k != key)
            raise ConfigError(key, f"{phase} needs about {_format(need)} of memory{procs} (per-task fast weights "
                              f"batch·n_rec² and trial activations batch·n_steps·neurons), {_format(available)} "
                              f"{source}; lower {key} (or {others}), or set run.memory_check=false to try anyway")


def check_device(cfg) -> None:
    """``run.device`` exists on this machine (a CUDA device: CUDA available, the index below the GPU count)."""
    if not cfg.run.device.startswith("cuda"):
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError("run.device", f"{cfg.run.device!r}: CUDA is not available on this machine")
    index = int(cfg.run.device.split(":")[1]) if ":" in cfg.run.device else 0
    if index >= torch.cuda.device_count():
        raise ConfigError("run.device", f"{cfg.run.device!r}: this machine has {torch.cuda.device_count()} GPUs")
