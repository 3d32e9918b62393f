"""scripts/compare_curves.py: the learning curves of a comparison's results.json aggregated per rule and iteration
(mean ± sample sd over seeds), on made-up runs; its two tasks' configurations are accepted by ``compare``, and
the rules a task's size rules out are named with the reason (no training here: a full run takes hours)."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest

from tests.load_file import load_file

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "compare_curves.py"


def _module():
    return load_file("compare_curves", SCRIPT)


def fake_results() -> dict:
    """Two rules × three seeds; seed 2 of ``eprop1`` evaluated at 0 and 10 only (it diverged at 20)."""
    runs = []
    for rule, offset in (("bptt", 0.0), ("eprop1", 1.0)):
        for seed in range(3):
            iterations = (0, 10) if (rule, seed) == ("eprop1", 2) else (0, 10, 20)
            curve = [{"iteration": i, "loss": offset + seed + i, "error": 0.5 - 0.01 * i * (seed + 1),
                      "time_s": 1.0} for i in iterations]
            if len(iterations) == 2:
                curve.append({"iteration": 20, "diverged": True})
            runs.append({"rule": rule, "seed": seed, "metric": "error", "curve": curve,
                         "diverged": len(iterations) == 2})
    return {"config": {}, "summary": [], "runs": runs}


def test_the_curves_are_the_mean_and_sd_over_seeds_where_every_seed_has_a_point(tmp_path):
    curves = _module().aggregate(fake_results())
    bptt, eprop = curves["bptt"], curves["eprop1"]
    assert bptt["iterations"] == [0, 10, 20] and eprop["iterations"] == [0, 10]  # the diverged seed ends there
    assert bptt["n_seeds"] == eprop["n_seeds"] == 3 and bptt["seeds"] == [0, 1, 2]
    assert (bptt["diverged"], eprop["diverged"]) == (0, 1)
    assert bptt["loss"]["mean"] == [1.0, 11.0, 21.0] and bptt["loss"]["sd"] == [1.0, 1.0, 1.0]
    errors = [0.5 - 0.01 * 20 * (s + 1) for s in range(3)]
    assert bptt["error"]["mean"][2] == pytest.approx(statistics.fmean(errors), abs=1e-15)
    assert bptt["error"]["sd"][2] == pytest.approx(statistics.stdev(errors), abs=1e-15)
    assert eprop["loss"]["mean"] == [2.0, 12.0]


def test_the_curve_files_are_written_for_a_finished_comparison(tmp_path):
    module = _module()
    (tmp_path / "results.json").write_text(json.dumps(fake_results()))
    module.write_curves(tmp_path, "evidence", {"rtrl": "rules: rtrl: sensitivity matrix too large"})
    record = json.loads((tmp_path / "curves.json").read_text())
    assert record["task"] == "evidence" and set(record["curves"]) == {"bptt", "eprop1"}
    table = (tmp_path / "curves.md").read_text()
    assert "| bptt | 3 | 20 | error 0.100 ± 0.200 | 21 ± 1 |" in table
    assert "not run: rtrl — rules: rtrl" in table
    assert (tmp_path / "curves.png").stat().st_size > 0
    assert module.main(["aggregate", str(tmp_path)]) == 0  # rewritten from the comparison's results alone
    assert "not run" not in (tmp_path / "curves.md").read_text()


@pytest.mark.parametrize("task", ["evidence", "sines"])
def test_both_tasks_are_accepted_and_the_dense_influence_rules_named_where_refused(task):
    module = _module()
    accepted, refused = module.accepted_rules({**module.TASKS[task], "seeds": [0, 1, 2]}, [])
    assert {"bptt", "eprop1(feedback=symmetric)", "ostl", "rflo"} <= set(accepted)
    assert set(accepted) | set(refused) == set(module.RULES)
    assert set(refused) == {"rtrl", "snap2"}  # 50 neurons: the dense influence matrix is over the size limit
    assert all(reason.startswith("rules: ") and "sensitivity matrix" in reason for reason in refused.values())
