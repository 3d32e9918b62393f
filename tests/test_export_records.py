"""The rule description's typed records (``eprop_l2l/hardware/description.py``): the committed version-1 export
still reads and re-writes byte for byte, the inner learning rate is ``inner_lr`` in the record and ``eta`` in the
file, and every malformed ``rule.json`` is refused in one line naming the file and the key.

``tests/data/export_v1`` is ``rule.json`` + ``weights.npz`` of a ``--target lava`` export (``experiment=tiny``, one
iteration, loihi number format) written by the code before the records were typed.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from eprop_l2l.hardware.description import (
    FORMAT_VERSION,
    NumberFormat,
    PlasticConnection,
    RuleDescription,
    Trace,
)
from eprop_l2l.hardware.rule import ExportError, load_rule, save_rule

ROOT = Path(__file__).resolve().parent.parent
EXPORT_V1 = ROOT / "tests" / "data" / "export_v1"


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((EXPORT_V1 / "rule.json").read_text())


def test_the_committed_version_1_export_loads_and_rewrites_byte_for_byte(record, tmp_path):
    rule, weights = load_rule(EXPORT_V1)
    assert rule.format_version == record["format_version"] == 1 and FORMAT_VERSION == 3  # read and kept as written
    assert rule.inner_lr == record["eta"] and rule.inner_lr > 0
    assert rule.plastic_names == ("w_in", "w_rec")
    assert rule.connection("w_rec") == PlasticConnection(weights="w_rec", pre="learner_spikes", pre_index="t-1",
                                                         trace=Trace(decay=record["learner"]["neurons"]["alpha"],
                                                                     impulse=1.0), diagonal_plastic=False)
    assert rule.number_format.is_fixed and rule.number_format.engine["tag_bits"] == 9
    assert rule.learning_signal.inputs == tuple((name, n) for name, n in record["learning_signal"]["inputs"])
    save_rule(tmp_path, rule, weights)
    assert (tmp_path / "rule.json").read_text() == (EXPORT_V1 / "rule.json").read_text()


def test_the_records_round_trip_and_the_file_keeps_its_keys(record):
    rule = RuleDescription.from_dict(record)
    written = rule.to_dict()
    assert json.loads(json.dumps(written)) == record
    assert list(written) == list(record)  # the same keys in the same order: "eta", never "inner_lr"
    assert "inner_lr" not in written and RuleDescription.from_dict(written) == rule
    assert NumberFormat.from_dict({"kind": "float32"}) == NumberFormat() and not NumberFormat().is_fixed


def _set(record: dict, path: str, value) -> dict:
    """A copy of ``record`` with the key at ``path`` (``a.b.0.c``) set to ``value``, or removed for ``...``."""
    out = copy.deepcopy(record)
    *parents, last = path.split(".")
    node = out
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node[key]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return out


@pytest.mark.parametrize("path, value, message", [
    ("eta", ..., "eta: missing"),
    ("inner_lr", 0.1, "inner_lr: unknown key"),
    ("eta", "fast", "eta: must be a number, got 'fast'"),
    ("eta", True, "eta: must be a number, got True"),
    ("n_updates", 1.5, "n_updates: must be an integer, got 1.5"),
    ("plastic.1.trace.decay", ..., r"plastic\[1\]\.trace\.decay: missing"),
    ("plastic.0.trace.tau", 20.0, r"plastic\[0\]\.trace\.tau: unknown key"),
    ("plastic.0.diagonal_plastic", "yes", r"plastic\[0\]\.diagonal_plastic: must be bool, got str"),
    ("plastic", {}, "plastic: must be a list, got dict"),
    ("learner.n_in", "10", "learner.n_in: must be an integer, got '10'"),
    ("learning_signal.inputs", [["context", 3, 1]], r"learning_signal\.inputs\[0\]: must have 2 entries, got 3"),
    ("post_factor", [], "post_factor: must be a JSON object, got list"),
    ("accumulation.when", "now", "accumulation.when: unknown key"),
    ("number_format.kind", "int8", "number_format.kind: 'int8' \\(choose from float32, fixed\\)"),
    ("format_version", 4, "format version 4; this eprop-l2l reads versions 1, 2, 3"),
])
def test_a_malformed_rule_file_is_refused_in_one_line_naming_the_file_and_key(record, tmp_path, path, value,
                                                                                 message):
    shutil.copy(EXPORT_V1 / "weights.npz", tmp_path / "weights.npz")
    (tmp_path / "rule.json").write_text(json.dumps(_set(record, path, value)))
    with pytest.raises(ExportError, match=message) as err:
        load_rule(tmp_path)
    assert str(err.value).startswith(f"{tmp_path / 'rule.json'}: ") and "\n" not in str(err.value)


def test_a_float32_number_format_holds_only_its_kind():
    with pytest.raises(ExportError, match="number_format.tag_bits: unknown key"):
        NumberFormat.from_dict({"kind": "float32", "tag_bits": 9})


def test_the_records_module_imports_neither_torch_nor_numpy():
    code = ("import sys, eprop_l2l.hardware.description; "
            "assert not {'torch', 'numpy'} & set(sys.modules), sorted({'torch', 'numpy'} & set(sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0, result.stderr[-2000:]
