"""Pin what every committed run directory under docs/results evaluates to, so that a refactor that changes
behaviour fails ``tests/test_committed_runs.py``.

    python scripts/pin_committed_runs.py            # adds the runs that have no pin yet; never changes a pin

Each pin is the summary of :func:`eprop_l2l.meta.evaluate.evaluate_one_shot` on the first few held-out
movements (``N_TASKS``, ``SEED``), computed by the code at the commit that wrote it.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.committed_runs import PIN_FILE, committed_runs, reevaluate  # noqa: E402


def main() -> int:
    pins = json.loads(PIN_FILE.read_text()) if PIN_FILE.exists() else {}
    added = 0
    for run in committed_runs():
        key = run.relative_to(ROOT).as_posix()
        if key in pins:
            continue
        pins[key] = reevaluate(run)
        added += 1
        print(f"pinned {key}: {pins[key]}")
    staged = PIN_FILE.with_suffix(".json.partial")
    staged.write_text(json.dumps(dict(sorted(pins.items())), indent=1) + "\n")
    os.replace(staged, PIN_FILE)
    print(f"{added} new pins, {len(pins)} in {PIN_FILE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
