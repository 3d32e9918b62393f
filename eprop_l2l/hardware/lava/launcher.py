"""Starting the Lava program from the torch side (standard library only: importable from ``.venv`` on Python 3.11).

Lava (lava-nc 0.10.0) runs on CPython 3.10 only, so the program :mod:`eprop_l2l.hardware.lava.run` runs in its
own environment ``.venv-lava`` (``make lava-env``) as a subprocess, in a session of its own so that everything it
started can be ended together if it has to be stopped::

    from eprop_l2l.hardware.lava import launcher
    code = launcher.main(["DIR", "--tasks", "5", "--precision", "fixed"])   # what `eprop-l2l hardware run` calls

``EPROP_L2L_LAVA_PYTHON`` names another interpreter (one that can import lava and numpy).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the source checkout holding eprop_l2l/ and .venv-lava/
MODULE = "eprop_l2l.hardware.lava.run"
ENV_VAR = "EPROP_L2L_LAVA_PYTHON"
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOPPING_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class LavaUnavailable(Exception):
    """No Lava environment: ``str`` is one line naming ``make lava-env``."""


def lava_python(root: Path | None = None) -> Path:
    """The interpreter of ``.venv-lava`` (or ``$EPROP_L2L_LAVA_PYTHON``); :class:`LavaUnavailable` if absent."""
    override = os.environ.get(ENV_VAR)
    path = Path(override) if override else Path(root or ROOT) / ".venv-lava" / "bin" / "python"
    if not path.exists():
        where = f"{ENV_VAR}={override}" if override else str(path.parent.parent)
        raise LavaUnavailable(f"no Lava environment ({where} not found): run `make lava-env` (it needs CPython 3.10)")
    return path


def command(args: list[str], python: Path | None = None) -> list[str]:
    return [str(python or lava_python()), "-m", MODULE, *args]


def run(args: list[str], timeout: float | None = None, python: Path | None = None,
        capture: bool = False) -> subprocess.CompletedProcess:
    """Run the Lava program with ``args`` (``DIR --tasks N --precision P --out OUT``); returns its exit status
    and, with ``capture``, its output. On a timeout or an interrupt the whole session of the program (its Lava
    runtime processes included) is ended before this returns or raises."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    pipe = subprocess.PIPE if capture else None
    proc = None
    try:
        with _signals_deferred():
            proc = subprocess.Popen(command(args, python), env=env, stdout=pipe, stderr=pipe, text=True,
                                    start_new_session=True, preexec_fn=_end_with_parent)
        out, err = proc.communicate(timeout=timeout)
    except BaseException:
        if proc is not None:
            _end_session(proc)
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """SIGINT/SIGTERM that arrive while the program is being started are re-raised once it has started, where
    its session can be ended. Raised inside ``Popen`` (between the fork and the exec, a window a loaded machine
    widens), they left the program running without its death signal, and it wrote its results later."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread handles signals
        yield
        return
    caught: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: caught.append(signum)) for sig in STOPPING_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if caught:
            signal.raise_signal(caught[0])


def _end_with_parent() -> None:
    """In the child, before ``exec``: SIGTERM to it when this process dies, even by ``kill -9`` (Linux
    ``prctl(PR_SET_PDEATHSIG)``; elsewhere nothing), so that no orphan runs on and writes its results later."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _end_session(proc: subprocess.Popen, grace: float = 10.0, again: float = 1.0) -> None:
    """SIGTERM to the program alone (it stops its Lava runtimes in its ``finally`` blocks; signalled too, the
    runtime's forked processes would each print the program's ``SystemExit``), once more after ``again`` seconds
    (a ``SystemExit`` raised while the program forks a runtime process is swallowed by the fork's callbacks),
    then, after at most ``grace`` seconds, SIGKILL to whatever is left of its session (its own:
    ``start_new_session``; nothing else is in it)."""
    for wait in (again, grace - again):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=wait)
        if proc.returncode is not None:
            break
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # the runtime processes, if any outlived it (or it did not stop)
    proc.wait()


def main(argv: list[str] | None = None) -> int:
    """``eprop-l2l hardware run DIR [--tasks N] [--precision float|fixed] [--out OUT]``: the exit status of the
    Lava program (2 and one line on stderr if there is no Lava environment)."""
    try:
        python = lava_python()
    except LavaUnavailable as err:
        print(f"eprop-l2l hardware run: {err}", file=sys.stderr)
        return 2
    return run(list(sys.argv[1:] if argv is None else argv), python=python).returncode


if __name__ == "__main__":
    sys.exit(main())
