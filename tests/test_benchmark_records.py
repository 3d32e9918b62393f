"""Benchmark records are never overwritten: an existing ``--out`` stops the script before it measures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

RESULTS_FILE = Path(__file__).resolve().parent.parent / "benchmarks" / "_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("benchmark_results", RESULTS_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


@pytest.mark.parametrize("which", ["meta", "trial", "distributed", "online"])
def test_every_benchmark_command_starts(which, capsys):
    """`eprop-l2l bench X --help` reaches the script's own help (the scripts share benchmarks/_results.py)."""
    from eprop_l2l.cli import main

    with pytest.raises(SystemExit) as done:
        main(["bench", which, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr()
    assert "--out" in out.out and "internal error" not in out.err


def test_the_online_benchmark_skips_nest_where_it_is_absent(monkeypatch, capsys):
    """Without NEST (the optional `nest` extra) the online benchmark runs its other cases: one line says so."""
    import sys

    monkeypatch.syspath_prepend(str(RESULTS_FILE.parent))
    monkeypatch.setitem(sys.modules, "nest", None)  # import nest raises ImportError
    import bench_eprop_online

    assert bench_eprop_online.nest_module() is None
    out = capsys.readouterr().out.strip().splitlines()
    assert out == ["nest: not installed (pip install -e '.[nest]'); its case is skipped"]
