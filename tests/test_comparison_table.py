"""``eprop-l2l table``: paired statistics of one-shot evaluations, checked against direct computations, and
bad input refused in one line with nothing written."""

import csv
import json
import statistics

import numpy as np
import pytest

from eprop_l2l.cli import main
from eprop_l2l.runs.comparison import comparison_rows


def _evaluation(folder, values, seed=12345, **metrics):
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps({"n_tasks": len(values), "seed": seed, **metrics}))
    (folder / "per_task.json").write_text(json.dumps({"mse_cart_after": list(values)}))
    return folder


@pytest.fixture
def runs(tmp_path):
    rng = np.random.default_rng(5)
    base = rng.lognormal(-4.5, 0.6, size=40)
    ref = [_evaluation(tmp_path / f"ref{s}", base * rng.lognormal(0, 0.1, 40), iterations=100 + s,
                       cpu_minutes=45.0, information="target_path, learner_spikes, clock") for s in range(3)]
    other = [_evaluation(tmp_path / f"other{s}", base * 0.5 * rng.lognormal(0, 0.1, 40), iterations=200,
                         cpu_minutes=45.0, information="motor_targets") for s in range(3)]
    return tmp_path, ref, other


def _values(folder):
    return np.array(json.loads((folder / "per_task.json").read_text())["mse_cart_after"])


def test_paired_statistics_equal_direct_computations(runs):
    _, ref, other = runs
    rows = comparison_rows([("e-prop 2", ref), ("e-prop 1", other)], "e-prop 2")
    assert [r["row"] for r in rows] == ["e-prop 2", "e-prop 1"]
    first, second = rows
    seed_means = [_values(f).mean() for f in other]
    assert second["mean"] == pytest.approx(statistics.mean(seed_means), rel=1e-12)
    assert second["sd"] == pytest.approx(statistics.stdev(seed_means), rel=1e-12)
    v = np.mean([_values(f) for f in other], axis=0)
    v_ref = np.mean([_values(f) for f in ref], axis=0)
    assert second["median"] == pytest.approx(statistics.median(v.tolist()), rel=1e-12)
    assert second["sem"] == pytest.approx(statistics.stdev(v.tolist()) / 40 ** 0.5, rel=1e-12)
    wins = sum(a < b for a, b in zip(v, v_ref, strict=True)) / 40
    assert second["win rate"] == wins and wins > 0.9  # half the error on every movement, up to noise
    log_ratio = statistics.mean(float(np.log(a / b)) for a, b in zip(v, v_ref, strict=True))
    assert second["log-ratio"] == pytest.approx(log_ratio, rel=1e-12)
    assert second["log-ratio"] == pytest.approx(np.log(0.5), abs=0.1)
    low, high = (float(x) for x in second["log-ratio 95% CI"].strip("[]").split(","))
    assert low < log_ratio < high and high - low < 0.2
    assert second["information"] == "motor_targets" and second["training seeds"] == 3
    assert second["iterations"] == 200 and second["CPU minutes"] == 45.0
    assert first["win rate"] is None and first["iterations"] == 101  # the reference is not paired with itself
    assert comparison_rows([("e-prop 2", ref), ("e-prop 1", other)], "e-prop 2") == rows  # reproducible CI


def test_the_command_writes_markdown_and_csv(runs, capsys):
    tmp_path, ref, other = runs
    out = tmp_path / "table"
    code = main(["table", "e-prop 2=" + ",".join(map(str, ref)), "e-prop 1=" + ",".join(map(str, other)),
                 "--out", str(out)])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["table.csv", "table.md"]
    with (out / "table.csv").open() as handle:
        table = list(csv.DictReader(handle))
    assert [r["row"] for r in table] == ["e-prop 2", "e-prop 1"]
    assert "| e-prop 1 | motor_targets |" in (out / "table.md").read_text()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".table.tmp-")]  # no staging left


def _fails(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    return err


def test_bad_input_is_refused_in_one_line_and_nothing_is_written(runs, capsys):
    tmp_path, ref, other = runs
    good = ["e-prop 2=" + str(ref[0]), "e-prop 1=" + str(other[0])]
    assert "--reference" in _fails(capsys, ["table", *good, "--reference", "MAML"])
    assert "LABEL=DIR" in _fails(capsys, ["table", "no-directories"])
    assert "metrics.json is missing" in _fails(capsys, ["table", f"x={tmp_path}"])
    elsewhere = _evaluation(tmp_path / "other_set", _values(other[0]), seed=2026)
    assert "movement set 40@2026" in _fails(capsys, ["table", good[0], f"e-prop 1={elsewhere}"])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "metrics.json").write_text("{")
    (tmp_path / "broken" / "per_task.json").write_text("{}")
    assert "unreadable" in _fails(capsys, ["table", f"x={tmp_path / 'broken'}"])
    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "keep.txt").write_text("mine")
    assert "new or empty" in _fails(capsys, ["table", *good, "--out", str(occupied)])
    assert [p.name for p in occupied.iterdir()] == ["keep.txt"] and (occupied / "keep.txt").read_text() == "mine"
