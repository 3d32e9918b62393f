"""The layer contracts of ``.importlinter`` hold for the package and fail on an upward import: a copy of the
package with one cell module importing the meta-learner is refused, naming the broken contract."""

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
