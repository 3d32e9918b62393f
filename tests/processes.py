"""The processes a test started, seen through Linux's /proc."""

from __future__ import annotations

from pathlib import Path


def children(pid: int) -> list[int]:
    """Every descendant of ``pid``."""
    found = []
    try:
        direct = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return found
    for child in direct:
        found += [child, *children(child)]
    return found


def alive(pid: int) -> bool:
    """Whether process ``pid`` still runs. A zombie has ended: a process whose parent was killed first is
    reparented to the container's PID 1, which need not reap it (seen in CI), and it stays in /proc holding
    nothing and writing nothing."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")
