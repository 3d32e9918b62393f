"""One meta-training run in a run directory: start or resume from its latest checkpoint, train until the
iteration count, a wall-clock budget or SIGINT/SIGTERM, checkpoint every N iterations and on the way out,
stream per-iteration records to ``history.jsonl`` and to a tracker, show a progress bar.

Only rank 0 writes (checkpoints, history, tracker); every rank resumes from the same checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from ..meta.trainer import MetaTraining, MetaTrainingState, Shard, meta_train, start
from .checkpoint import latest_checkpoint, restore, save_checkpoint
from .rundir import HISTORY, write_atomic


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """How one session of a run is kept. The values come from the run's config (``config.schema.RunConfig``
    states their defaults, the one place: this layer sits above the schema, so the schema cannot read them
    here)."""

    checkpoint_every: int  # iterations between checkpoints
    keep: int  # checkpoints kept
    minutes: float  # wall-clock budget; 0 = none
    progress: bool  # progress bar with the live meta-loss
    resume: bool = True  # continue from the run directory's latest checkpoint if there is one (a session's own)


class _StopFlag:
    """Set by SIGINT/SIGTERM or the time budget; the loop stops between iterations and checkpoints."""

    def __init__(self, deadline: float | None):
        self.deadline, self.signal = deadline, None

    def __call__(self) -> bool:
        return self.signal is not None or (self.deadline is not None and time.time() > self.deadline)

    def handler(self, signum, _frame):
        self.signal = signal.Signals(signum).name


def _progress(total: int, initial: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, unit="it", dynamic_ncols=True, leave=True)


def _write_history(path: Path, history: list[dict]):
    """history.jsonl rewritten (atomically) from the checkpoint's history: records after the checkpoint are
    dropped. Returns a running SHA-256 of the file's content."""
    text = "".join(json.dumps(record) + "\n" for record in history)
    write_atomic(path, text)
    return hashlib.sha256(text.encode())


def run_session(learner, family, config: MetaTraining, run_dir: str | Path, options: SessionOptions,
                device: str | torch.device = "cpu", log: Callable[[dict], None] | None = None,
                shard: Shard | None = None, checkpoint_extra: dict | None = None,
                init_meta: dict | None = None) -> tuple[MetaTrainingState, str]:
    """Returns the state and why it ended: ``"done"``, ``"time"`` or the signal's name. A new run starts from
    ``init_meta`` if given (fine-tuning), else from the learner's initialisation; an existing run resumes."""
    run_dir = Path(run_dir)
    shard = shard if shard is not None else Shard()
    writer = shard.rank == 0
    if writer:
        run_dir.mkdir(parents=True, exist_ok=True)
    latest = latest_checkpoint(run_dir) if options.resume else None
    state = restore(learner, config, latest, device) if latest is not None else start(learner, config, init_meta,
                                                                                       device)
    stop = _StopFlag(time.time() + 60 * options.minutes if options.minutes > 0 else None)
    previous = {s: signal.signal(s, stop.handler) for s in (signal.SIGINT, signal.SIGTERM)}
    history = run_dir / HISTORY
    digest = _write_history(history, state.history) if writer else None
    handle = history.open("a") if writer else None
    bar = _progress(config.n_iterations, state.iteration, options.progress and writer)

    def checkpoint():
        if writer:
            save_checkpoint(run_dir, state, options.keep, checkpoint_extra,
                            history={"file": HISTORY, "records": len(state.history), "sha256": digest.hexdigest()})

    def on_record(record: dict) -> None:
        if writer:
            line = json.dumps(record) + "\n"
            handle.write(line)
            handle.flush()
            digest.update(line.encode())
            if log is not None:
                log(record)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}",
                            cart=f"{record.get('train/mse_cart_after', float('nan')):.3f}")
        if state.iteration % options.checkpoint_every == 0:
            checkpoint()

    try:
        meta_train(learner, family, config, state, callback=on_record, should_stop=stop, shard=shard)
        if latest_checkpoint(run_dir) is None or state.iteration % options.checkpoint_every:
            checkpoint()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
        if bar is not None:
            bar.close()
        if handle is not None:
            handle.close()
    reason = stop.signal or ("time" if stop() else "done")
    return state, reason
