"""What the commands that write an output (``export``, ``hardware run``, ``compare``, ``plot``, ``table``) wrap
their work in.

* :func:`interrupt_on_terminate`: SIGTERM ends a command the way Ctrl-C (SIGINT) does, as a
  ``KeyboardInterrupt`` raised in the main thread, so that every ``finally`` and ``except BaseException`` on the
  way out runs — the children a command started are ended (the Lava program's session, ``compare``'s worker
  processes), staging folders are removed — and the front end reports it in one line (exit 130). Python's
  default for SIGTERM ends the process at once and leaves its children running: they would write their results
  later, into an output the user believes stopped. (``train`` stops differently: between iterations, with a
  checkpoint, :mod:`eprop_l2l.runs.session`.)
* :func:`faults_naming`: an operating-system failure (disk full, read-only, ...) as one line whose way out
  names the option the user passed (``--out``), not ``run.dir``.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from ..messages import os_problem
from ..runs.rundir import RunFault


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
