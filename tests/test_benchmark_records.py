"""Benchmark records are never overwritten: an existing ``--out`` stops the script before it measures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.load_file import load_file

RESULTS_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "_results.py"


def _module():
    return load_file("benchmark_results", RESULTS_FILE)


def test_a_new_record_is_written_and_an_existing_one_is_kept(tmp_path):
    results = _module()
    out = tmp_path / "sub" / "record.json"
    results.check_out(str(out))  # nothing there yet: no exit
    results.write_result(str(out), {"time_s": 1.5})
    assert json.loads(out.read_text()) == {"time_s": 1.5}
    assert [p.name for p in out.parent.iterdir()] == ["record.json"]  # no temporary file left behind
    with pytest.raises(SystemExit, match="--out: .*record.json exists"):
        results.check_out(str(out))
    with pytest.raises(SystemExit, match="never overwritten"):
        results.write_result(str(out), {"time_s": 9.9})
    assert json.loads(out.read_text()) == {"time_s": 1.5}


def test_no_out_writes_nothing(tmp_path):
    results = _module()
    results.check_out(None)
    results.write_result(None, {"x": 1})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["meta", "trial", "distributed", "roofline", "online", "cost"])
def test_every_benchmark_command_starts(which, capsys):
    """`eprop-l2l bench X --help` reaches the script's own help (the scripts share benchmarks/_results.py)."""
    from eprop_l2l.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bench", which, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr()
    assert "--out" in out.out and "internal error" not in out.err


def test_the_roofline_counts_the_spikes_the_learner_reports():
    """The lower bound is counted on the measured iteration's own spikes: the learner's counts give the firing
    rate that the meta-learner reports for the same forward pass (both trials), and the dense work is the
    formula's."""
    import sys

    import torch

    sys.path.insert(0, str(RESULTS_FILE.parent))
    import roofline

    case = roofline.Case("cpu", "cpu")
    k = roofline.counts(case)
    with torch.no_grad():
        metrics = case.learner.forward(case.leaves, case.batch)["metrics"]
    dt_s = case.learner.network.cell.dt_ms / 1000
    learner_hz = (k["s_d"] + k["s_t"]) / (2 * k["B"] * k["T"] * k["N"] * dt_s)
    assert learner_hz == pytest.approx(float(metrics["rate_network_hz"]), rel=1e-5)
    assert k["s_d"] > 0 and k["s_e"] > 0 and k["s_e_test"] > 0 and k["c"] > 0
    work = roofline.least_work(k)
    assert work["macs"] == work["macs_dense"] + work["macs_events"] and work["macs_dense"] == (
        k["B"] * k["T"] * (3 * k["N"] ** 2 + 2 * k["M"] ** 2 + 3 * k["N"] * k["M"]))


def test_the_online_benchmark_skips_nest_where_it_is_absent(monkeypatch, capsys):
    """Without NEST (the optional `nest` extra) the online benchmark runs its other cases: one line says so."""
    import sys

    monkeypatch.syspath_prepend(str(RESULTS_FILE.parent))
    monkeypatch.setitem(sys.modules, "nest", None)  # import nest raises ImportError
    import bench_eprop_online

    assert bench_eprop_online.nest_module() is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["nest: not installed (pip install -e '.[nest]'); its case is skipped"]


def test_the_cost_benchmark_fits_the_slopes_and_writes_its_record(tmp_path, monkeypatch, capsys):
    """The influence-cost benchmark (``eprop-l2l bench cost``): the fitted slope of an exact power law is its
    exponent, and a run at two tiny sizes writes one record per case with a slope beside the expected order and
    the influence sizes of the recursion (not its timings: those are measured, never asserted)."""
    import math
    import sys

    monkeypatch.syspath_prepend(str(RESULTS_FILE.parent))
    import bench_influence_cost as cost

    sizes = [32, 64, 128]
    assert cost.fit_slope(sizes, [3.0 * n**2.5 for n in sizes]) == pytest.approx(2.5, abs=1e-12)
    assert cost.fit_slope([8, 16], [1.0, 1.0]) == 0.0
    fake = {"rtrl": {"time_ms_per_step": [n**4 / 1e5 for n in sizes], "peak_mb": [n**3 / 1e4 for n in sizes],
                     "entries": [3 * n**3 for n in sizes]},
            "bptt": {"time_ms_per_step": [1.0, 2.0, 4.0], "peak_mb": [0.1, 0.4, 1.6], "entries": [None] * 3}}
    summary = cost.summarise(sizes, fake)
    assert summary["rtrl"]["slope_time"] == pytest.approx(4) and summary["rtrl"]["slope_memory"] == pytest.approx(3)
    assert summary["rtrl"]["slope_entries"] == pytest.approx(3) and "slope_entries" not in summary["bptt"]
    assert summary["bptt"]["slope_time"] == pytest.approx(1) and summary["bptt"]["expected"]["time"] == 2
    rows = cost.table(sizes, summary).splitlines()
    assert len(rows) == 4 and rows[2].startswith("| rtrl | ") and "4.00 (4)" in rows[2]

    out = tmp_path / "cost.json"
    monkeypatch.setattr(sys, "argv", ["bench_influence_cost.py", "--sizes", "4", "8", "--steps", "2", "--repeats",
                                      "1", "--fan-in", "2", "--n-in", "3", "--out", str(out)])
    cost.main()
    record = json.loads(out.read_text())
    assert record["sizes"] == [4, 8] and set(record["cases"]) == set(cost.CASES)
    assert record["command"].endswith("--out " + str(out)) and "B=1, T=2" in record["shape"]
    for case, r in record["cases"].items():
        assert len(r["time_ms_per_step"]) == len(r["peak_mb"]) == 2 and min(r["peak_mb"]) > 0, case
        assert math.isfinite(r["slope_time"]) and math.isfinite(r["slope_memory"])
        assert r["expected"] == cost.EXPECTED[case]
    network, params, *_ = cost.build(8, n_in=3, fan_in=2, steps=2)
    fields, columns = 3, 3 + 8  # LIF: v, z, refractory; 3 inputs + 8 recurrent columns per neuron
    assert record["cases"]["rtrl"]["entries"][1] == fields * 8 * (8 * columns + 2 * 8 + 2)
    assert record["cases"]["ostl"]["entries"][1] == 8 * fields * columns  # the own pair of each neuron
    kept_pairs = 8 + int((params["w_rec"] != 0).sum())  # its own and those of the 2 neurons each receives from
    assert record["cases"]["snap2"]["entries"][1] == kept_pairs * fields * columns
    assert record["cases"]["eprop"]["entries"] == [None, None]
    assert "| snap2 | " in capsys.readouterr().out
