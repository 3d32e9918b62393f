"""The front page states what the code does: the README's demo table is the committed demo run's, its Python
example is the one the documentation site shows (and tests/test_researcher.py runs), its links resolve, and it
stays short enough to read in two minutes (everything else lives in docs/, built strictly by `make test`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from eprop_l2l.runs.evaluation import format_table

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
README_LIMIT_BYTES = 12_000


def python_block(text: str, heading: str) -> str:
    section = text[text.index(heading):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_prints_what_the_committed_demo_printed():
    metrics = json.loads((ROOT / "docs/results/demo/metrics.json").read_text())
    table = format_table(metrics)
    assert f"```\n{table}\n```" in README, table
    assert f"{metrics['iterations']} meta-iterations" in README


def test_the_documentation_site_shows_the_readmes_python_example():
    usage = (ROOT / "docs/usage.md").read_text()
    heading = "## Python API"
    assert python_block(usage, heading) == python_block(README, heading)


def test_the_readme_is_short_and_its_links_resolve():
    assert len(README.encode()) <= README_LIMIT_BYTES
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    assert targets, "the README links to the documentation"
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert missing == []
