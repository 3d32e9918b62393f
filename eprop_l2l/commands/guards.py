"""What the commands that write an output (``export``, ``hardware run``, ``compare``, ``plot``, ``table``) wrap
their work in.

* :func:`interrupt_on_terminate`: SIGTERM ends a command the way Ctrl-C (SIGINT) does, as a
  ``KeyboardInterrupt`` raised in the main thread, so that every ``finally`` and ``except BaseException`` on the
  way out runs — the children a command started are ended (the Lava program's session, ``compare``'s worker
  processes), staging folders are removed — and the front end reports it in one line (exit 130). Python's
  default for SIGTERM ends the process at once and leaves its children running: they would write their results
  later, into an output the user believes stopped. (``train`` stops differently: between iterations, with a
  checkpoint, :mod:`eprop_l2l.runs.session`.)
* :func:`failure`: any failure of a command as its exit status and the one line the front end prints (also what a
  multirun's index records for a failed job).
* :func:`faults_naming`: an operating-system failure (disk full, read-only, ...) as one line whose way out
  names the option the user passed (``--out``), not ``run.dir``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ..errors import ConfigError
from ..messages import os_problem
from ..runs.rundir import RunError, RunFault


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is (a ``KeyboardInterrupt``: handled as an interrupt)."""


def _raise(signum, frame) -> None:
    raise Terminated(signal.Signals(signum).name)


@contextlib.contextmanager
def interrupt_on_terminate() -> Iterator[None]:
    """While the block runs (in the main thread), SIGTERM raises :class:`Terminated`; the previous handler is
    restored afterwards. Elsewhere (another thread) a no-op: only the main thread may set handlers."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def faults_naming(place: str) -> Iterator[None]:
    """An ``OSError`` in the block as a :class:`~eprop_l2l.runs.rundir.RunFault` (exit 1) whose way out names
    ``place``."""
    try:
        yield
    except OSError as err:
        raise RunFault(os_problem(err, place=place)) from None


def is_bug(err: BaseException) -> bool:
    """Not a failure the package reports as such (bad input, a fault, an interrupt): a bug."""
    from ..meta.trainer import NonFiniteError  # torch's modules: imported where a failure is reported
    from ..runs.checkpoint import CheckpointError

    return not isinstance(err, ConfigError | CheckpointError | NonFiniteError | KeyboardInterrupt | RunError | OSError
                          | MemoryError)


def failure(err: BaseException) -> tuple[int, str]:
    """``(exit status, one line)`` of a command's failure: bad input 2 (checked before any computation), a fault
    after the start 1, an interrupt 130; a bug 1, with the way to report it."""
    from ..meta.trainer import NonFiniteError
    from ..runs.checkpoint import CheckpointError

    if isinstance(err, ConfigError | CheckpointError):
        return 2, str(err)
    if isinstance(err, NonFiniteError):
        return 1, str(err)
    if isinstance(err, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(err, RunError):  # run directory refused (2), fault after the start (1): docs in runs/rundir.py
        return err.code, str(err)
    if isinstance(err, OSError):
        return 1, os_problem(err)
    if isinstance(err, MemoryError):
        return 1, "out of memory: lower optim.batch_size, model.n_rec or task.n_steps"
    detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return 1, (f"internal error {type(err).__name__}: {detail} (a bug: please report it with the command; "
               "EPROP_L2L_TRACEBACK=1 shows the traceback)")
