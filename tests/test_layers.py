"""The layer contracts of ``.importlinter`` hold for the package and fail on an upward import: a copy of the
package with one cell module importing the meta-learner is refused, naming the broken contract. And no two
modules import each other, not even from inside a function (a cycle hidden in a function-level import is still
a cycle): a copy with one such import is found."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(not LINT.exists(), reason="import-linter is not installed (the dev extra)")


def lint(tree: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(LINT), "--config", str(tree / ".importlinter"), "--no-cache"], cwd=tree, env=env,
                          capture_output=True, text=True, timeout=300)


def test_the_package_keeps_its_layers():
    result = lint(ROOT)
    assert result.returncode == 0, result.stdout[-2000:]
    assert "Contracts: 2 kept, 0 broken." in result.stdout


def test_an_upward_import_breaks_the_layers(tmp_path):
    shutil.copytree(ROOT / "eprop_l2l", tmp_path / "eprop_l2l", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    shutil.copy(ROOT / ".importlinter", tmp_path / ".importlinter")
    lif = tmp_path / "eprop_l2l" / "cells" / "lif.py"
    lif.write_text(lif.read_text() + "\nfrom ..meta.learner import MetaLearner  # noqa: E402 (upward, on purpose)\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "the library's layers import only downwards BROKEN" in result.stdout
    assert "eprop_l2l.cells.lif -> eprop_l2l.meta.learner" in result.stdout


# the strongly connected components of the package's import graph (grimp, import-linter's own graph, which
# counts imports inside functions too), printed one per line
CYCLES = """
import sys, grimp
graph = grimp.build_graph("eprop_l2l")
adjacent = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
index, low, stack, on_stack, counter = {}, {}, [], set(), [0]
sys.setrecursionlimit(100000)
def visit(v):
    index[v] = low[v] = counter[0]; counter[0] += 1; stack.append(v); on_stack.add(v)
    for w in adjacent[v]:
        if w not in index:
            visit(w); low[v] = min(low[v], low[w])
        elif w in on_stack:
            low[v] = min(low[v], index[w])
    if low[v] == index[v]:
        component = []
        while True:
            w = stack.pop(); on_stack.discard(w); component.append(w)
            if w == v:
                break
        if len(component) > 1:
            print(" ".join(sorted(component)))
for module in sorted(graph.modules):
    if module not in index:
        visit(module)
"""


def import_cycles(tree: Path) -> list[str]:
    result = subprocess.run([sys.executable, "-c", CYCLES], cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout.splitlines()


def test_no_two_modules_import_each_other():
    assert import_cycles(ROOT) == []


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    shutil.copytree(ROOT / "eprop_l2l", tmp_path / "eprop_l2l", ignore=shutil.ignore_patterns("__pycache__", "*.so"))
    kinematics = tmp_path / "eprop_l2l" / "task_families" / "scorbot_kinematics.py"
    kinematics.write_text(kinematics.read_text() + "\n\ndef _figure():\n    from .scorbot import ScorbotBrownian\n\n"
                          "    return ScorbotBrownian\n")
    (cycle,) = import_cycles(tmp_path)
    assert "eprop_l2l.task_families.scorbot" in cycle.split()
    assert "eprop_l2l.task_families.scorbot_kinematics" in cycle.split()
