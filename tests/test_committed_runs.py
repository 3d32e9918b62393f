"""Every committed run directory under docs/results still loads and evaluates to the numbers pinned when it was
committed (``tests/data/committed_runs.json``, written by ``scripts/pin_committed_runs.py``): a refactor that
changes behaviour, or a format change that leaves an old run unreadable, fails here."""

import json

import pytest

from tests.committed_runs import PIN_FILE, ROOT, committed_runs, reevaluate

PINS = json.loads(PIN_FILE.read_text())
# float32 trials re-run on the same CPU build: only a change of arithmetic order moves the last bits
RELATIVE = 1e-5


def test_every_committed_run_is_pinned():
    runs = {run.relative_to(ROOT).as_posix() for run in committed_runs()}
    assert runs - PINS.keys() == set(), "run python scripts/pin_committed_runs.py"
    assert PINS.keys() - runs == set(), "a pinned run directory was removed from docs/results"


@pytest.mark.parametrize("run", sorted(PINS))
def test_committed_run_reevaluates_to_its_pin(run):
    got = reevaluate(ROOT / run)
    assert got.keys() == PINS[run].keys()
    for key, pinned in PINS[run].items():
        assert got[key] == pytest.approx(pinned, rel=RELATIVE, abs=1e-9), key
