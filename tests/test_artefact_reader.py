"""The one artefact reader (``eprop_l2l/hardware/reader.py``) and the checked source run (issue 23).

An export directory is read by one path on both sides: ``load_rule`` / ``verify`` (torch) and the Lava program
(``eprop-l2l hardware run``, in ``.venv-lava`` without torch). A tampered, missing, unlisted, truncated or
oversized file, an unknown key and a physically impossible value are each refused in one line naming the file
(and the key), with exit 2 and before any compute; the export directory stays byte-identical. ``export`` and
``load_run`` read a run through its manifest, as ``evaluate`` does, and refuse a ``config.yaml`` edited after
training.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest

from eprop_l2l import api
from eprop_l2l.cells.spec import NeuronSpec, ReadoutSpec
from eprop_l2l.cli import main
from eprop_l2l.errors import ConfigError
from eprop_l2l.hardware import description, reader
from eprop_l2l.hardware.export import verify
from eprop_l2l.hardware.lava import artefacts
from eprop_l2l.hardware.lava import run as lava_run
from eprop_l2l.hardware.rule import ExportError, load_rule

ROOT = Path(__file__).resolve().parent.parent
LAVA_PY = ROOT / ".venv-lava" / "bin" / "python"
QUIET = ("wandb.mode=disabled", "run.progress=false")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("reader") / "run"
    assert main(["train", "experiment=tiny", "optim.n_iterations=1", f"run.dir={run}", *QUIET]) == 0
    return run


@pytest.fixture(scope="module")
def export_dir(run_dir):
    out = run_dir.parent / "export"
    assert main(["export", str(run_dir), "--target", "lava", "--out", str(out), "--tasks", "2",
                 "--calibration-tasks", "2"]) == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def resign(directory: Path) -> None:
    """The manifest's SHA-256 entries recomputed after a deliberate edit (so that the reader gets past them)."""
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"] = {name: hashlib.sha256((directory / name).read_bytes()).hexdigest()
                         for name in manifest["files"] if (directory / name).is_file()}
    (directory / "manifest.json").write_text(json.dumps(manifest, indent=2))


def copy_of(export_dir: Path, tmp_path: Path) -> Path:
    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    return bad


def edit_rule(directory: Path, edit) -> None:
    record = json.loads((directory / "rule.json").read_text())
    edit(record)
    (directory / "rule.json").write_text(json.dumps(record, indent=2))
    resign(directory)


def one_line_error(err: pytest.ExceptionInfo) -> str:
    text = str(err.value)
    assert "\n" not in text and text, text
    return text


def lava_program(directory: Path, tmp_path: Path, capsys) -> str:
    """The Lava program's own check (``python -m eprop_l2l.hardware.lava.run``, here without lava-nc: it refuses
    bad input before it imports Lava): exit 2, one line, nothing written, the export byte-identical."""
    before, out = snapshot(directory), tmp_path / "report"
    assert lava_run.main([str(directory), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("eprop-l2l lava: ") and "Traceback" not in err, err
    assert snapshot(directory) == before and not out.exists()
    return err.strip()


def hardware_run(directory: Path, tmp_path: Path, capfd) -> str:
    """``eprop-l2l hardware run``: the Lava program in .venv-lava (CPython 3.10, no torch)."""
    if not LAVA_PY.exists():
        pytest.skip("no .venv-lava (`make lava-env`)")
    before, out = snapshot(directory), tmp_path / "report"
    capfd.readouterr()
    assert main(["hardware", "run", str(directory), "--out", str(out)]) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert snapshot(directory) == before and not out.exists()
    return lines[0]


# --- the manifest first -----------------------------------------------------------------------------------------
def _append_byte(bad: Path) -> str:
    with (bad / "weights.npz").open("ab") as handle:
        handle.write(b"\0")
    return "weights.npz"


def _edit_unsigned(bad: Path) -> str:
    record = json.loads((bad / "rule.json").read_text())
    record["eta"] = 1e300  # never parsed: the hash is checked first
    (bad / "rule.json").write_text(json.dumps(record))
    return "rule.json"


def _delete_weights(bad: Path) -> str:
    (bad / "weights.npz").unlink()
    return "weights.npz"


def _delete_fidelity(bad: Path) -> str:
    (bad / "fidelity.json").unlink()
    return "fidelity.json"


def _extra_file(bad: Path) -> str:
    (bad / "notes.txt").write_text("not part of the export")
    return "notes.txt"


def _extra_npz(bad: Path) -> str:
    np.savez(bad / "more.npz", w=np.zeros(3))
    return "more.npz"


MANIFEST_CASES = [("tampered weights", _append_byte, "SHA-256 mismatch"),
                  ("tampered rule", _edit_unsigned, "SHA-256 mismatch"),
                  ("missing weights", _delete_weights, "missing"), ("missing fidelity", _delete_fidelity, "missing"),
                  ("extra file", _extra_file, "not listed in manifest.json"),
                  ("extra npz", _extra_npz, "not listed in manifest.json")]


def test_the_lock_of_a_report_being_written_inside_the_export_is_not_an_extra_file(export_dir, tmp_path):
    """``hardware run DIR`` writes DIR/lava_<precision> and holds ``.lava_<precision>.lock`` beside it for the
    whole run (outputs.claim), while the Lava program verifies DIR: the lock must not fail the check."""
    bad = copy_of(export_dir, tmp_path)
    (bad / ".lava_float.lock").write_text("123 an eprop-l2l hardware run")
    verify(bad)
    (bad / ".notes.lock").write_text("x")  # any other unlisted file still is
    with pytest.raises(ExportError, match="not listed in manifest.json"):
        verify(bad)


@pytest.mark.parametrize(("damage", "expected"), [c[1:] for c in MANIFEST_CASES], ids=[c[0] for c in MANIFEST_CASES])
def test_a_changed_missing_or_extra_file_is_refused_before_anything_is_parsed(export_dir, tmp_path, capsys,
                                                                              monkeypatch, damage, expected):
    bad = copy_of(export_dir, tmp_path)
    name = damage(bad)
    parsed = []
    monkeypatch.setattr(description.RuleDescription, "from_dict", classmethod(lambda *a, **k: parsed.append(a)))
    with pytest.raises(ExportError) as err:
        verify(bad)
    assert one_line_error(err).startswith(str(bad / name)) and expected in str(err.value)
    line = lava_program(bad, tmp_path, capsys)
    assert name in line and expected in line
    assert parsed == []


@pytest.mark.parametrize(("damage", "expected"), [c[1:] for c in MANIFEST_CASES[::2]],
                         ids=[c[0] for c in MANIFEST_CASES[::2]])
def test_hardware_run_refuses_a_changed_missing_or_extra_file(export_dir, tmp_path, capfd, damage, expected):
    bad = copy_of(export_dir, tmp_path)
    name = damage(bad)
    line = hardware_run(bad, tmp_path, capfd)
    assert name in line and expected in line


# --- bounded arrays -----------------------------------------------------------------------------------------------
def _truncate(bad: Path, name: str, keep: float) -> None:
    data = (bad / name).read_bytes()
    (bad / name).write_bytes(data[:int(len(data) * keep)])
    resign(bad)


def npy_claiming(shape: tuple[int, ...], payload: bytes = b"\0" * 64) -> bytes:
    """An .npy member whose header claims ``shape`` (float32) over a few bytes of data."""
    header = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + payload


def replace_member(path: Path, key: str, member: bytes) -> None:
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for k, v in arrays.items():
            if k != key:
                stream = io.BytesIO()
                np.lib.format.write_array(stream, v)
                archive.writestr(f"{k}.npy", stream.getvalue())
        archive.writestr(f"{key}.npy", member)
    path.write_bytes(buffer.getvalue())


ARRAY_CASES = [
    ("weights truncated", lambda bad: _truncate(bad, "weights.npz", 0.5), "weights.npz", "truncated or corrupted"),
    ("demonstrations truncated", lambda bad: _truncate(bad, "demonstrations.npz", 0.02), "demonstrations.npz",
     "truncated or corrupted"),
    ("weights header claims 4 TiB", lambda bad: (replace_member(bad / "weights.npz", "w_rec",
                                                                npy_claiming((1 << 20, 1 << 20))), resign(bad)),
     "weights.npz", "array 'w_rec': shape (1048576, 1048576), expected"),
    ("demonstrations header claims 3.6 TiB", lambda bad: (replace_member(bad / "demonstrations.npz", "psi",
                                                                         npy_claiming((1000, 1 << 30))), resign(bad)),
     "demonstrations.npz", "array 'psi': its header claims shape (1000, 1073741824)"),
    ("header claims more than the member holds", lambda bad: (replace_member(bad / "demonstrations.npz", "psi",
                                                                             npy_claiming((4, 1000))), resign(bad)),
     "demonstrations.npz", "array 'psi': its header claims 16000 bytes, the file holds 64"),
    ("an unknown array", lambda bad: (replace_member(bad / "weights.npz", "w_extra", npy_claiming((16,))),
                                      resign(bad)), "weights.npz", "array 'w_extra': unknown"),
]


@pytest.mark.parametrize(("damage", "name", "expected"), [c[1:] for c in ARRAY_CASES], ids=[c[0] for c in ARRAY_CASES])
def test_a_truncated_or_oversized_array_is_refused_before_it_is_allocated(export_dir, tmp_path, capsys, monkeypatch,
                                                                          damage, name, expected):
    bad = copy_of(export_dir, tmp_path)
    damage(bad)
    before = snapshot(bad)
    if name == "weights.npz":
        read = np.lib.format.read_array
        calls = []
        monkeypatch.setattr(np.lib.format, "read_array", lambda *a, **k: calls.append(1) or read(*a, **k))
        with pytest.raises(ExportError) as err:
            load_rule(bad)
        assert one_line_error(err).startswith(str(bad / name)) and expected in str(err.value)
        if "claims" in expected or "shape" in expected or "unknown" in expected:
            assert calls == []  # refused from the headers alone
        monkeypatch.undo()
    line = lava_program(bad, tmp_path, capsys)
    assert name in line and expected in line
    assert snapshot(bad) == before


@pytest.mark.parametrize("case", [0, 3])
def test_hardware_run_refuses_a_truncated_or_oversized_array(export_dir, tmp_path, capfd, case):
    _, damage, name, expected = ARRAY_CASES[case]
    bad = copy_of(export_dir, tmp_path)
    damage(bad)
    line = hardware_run(bad, tmp_path, capfd)
    assert name in line and expected in line


# --- the schema and the physical ranges -------------------------------------------------------------------------
def _set(path: str, value):
    def edit(record):
        node = record
        *parents, last = path.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node[key]
        node[int(last) if isinstance(node, list) else last] = value
    return edit


RULE_CASES = [
    ("unknown top-level key", "extra", 1, "extra: unknown key"),
    ("unknown neuron key", "learner.neurons.tau_x_ms", 5.0, r"learner.neurons.tau_x_ms: unknown key"),
    ("unknown readout key", "learner.readout.gain", 2.0, r"learner.readout.gain: unknown key"),
    ("trace decay 1e300", "plastic.0.trace.decay", 1e300, "plastic[0].trace.decay: must be in (0, 1), got 1e+300"),
    ("trace decay < 0", "plastic.1.trace.decay", -0.5, "plastic[1].trace.decay: must be in (0, 1), got -0.5"),
    ("eta 0", "eta", 0.0, "eta: must be > 0, got 0"),
    ("eta negative", "eta", -1e-3, "eta: must be > 0, got -0.001"),
    ("eta NaN", "eta", float("nan"), "eta: must be finite, got nan"),
    ("infinite impulse", "plastic.0.trace.impulse", float("inf"), "plastic[0].trace.impulse: must be finite, got inf"),
    ("filter decay 1", "learning_signal.filter_decay", 1.0, "learning_signal.filter_decay: must be in (0, 1), got 1"),
    ("threshold 0", "post_factor.v_th", 0.0, "post_factor.v_th: must be > 0, got 0"),
    ("learner alpha 1.5", "learner.neurons.alpha", 1.5, "learner.neurons.alpha: must be in (0, 1), got 1.5"),
    ("no neurons", "learner.neurons.n", 0, "learner.neurons.n: must be >= 1, got 0"),
    ("module input width 0", "learning_signal.inputs.0.1", 0, "learning_signal.inputs[0][1]: must be >= 1, got 0"),
]


@pytest.mark.parametrize(("path", "value", "expected"), [c[1:] for c in RULE_CASES], ids=[c[0] for c in RULE_CASES])
def test_an_unknown_key_or_an_impossible_value_is_refused_on_both_sides(export_dir, tmp_path, capsys, path, value,
                                                                        expected):
    bad = copy_of(export_dir, tmp_path)
    edit_rule(bad, _set(path, value))
    with pytest.raises(ExportError) as err:
        load_rule(bad)
    assert one_line_error(err).startswith(f"{bad / 'rule.json'}: {expected}")
    assert lava_program(bad, tmp_path, capsys).startswith(f"eprop-l2l lava: rule.json: {expected}")


@pytest.mark.parametrize("case", [1, 3, 5, 7])
def test_hardware_run_refuses_an_unknown_key_or_an_impossible_value(export_dir, tmp_path, capfd, case):
    _, path, value, expected = RULE_CASES[case]
    bad = copy_of(export_dir, tmp_path)
    edit_rule(bad, _set(path, value))
    assert hardware_run(bad, tmp_path, capfd).startswith(f"eprop-l2l lava: rule.json: {expected}")


def test_the_reader_accepts_the_export_as_written(export_dir):
    manifest, rule, weights = reader.read_export(export_dir)
    loaded_rule, loaded_weights = load_rule(export_dir)
    assert manifest == verify(export_dir) and rule == loaded_rule
    assert weights.keys() == loaded_weights.keys() == reader.weight_shapes(rule).keys()
    assert all(np.array_equal(weights[k], loaded_weights[k]) for k in weights)
    art = artefacts.load(export_dir)
    assert art.rule == rule and all(np.array_equal(art.weights[k], weights[k]) for k in weights)
    assert {k: v.shape for k, v in weights.items()} == reader.weight_shapes(rule)


def test_the_neuron_and_readout_keys_are_the_specs():
    import dataclasses

    assert description.NEURON_KEYS == (*(f.name for f in dataclasses.fields(NeuronSpec)), "alpha", "rho")
    assert set(description.NEURON_REQUIRED) == {f.name for f in dataclasses.fields(NeuronSpec)
                                                if f.default is dataclasses.MISSING}
    assert description.READOUT_KEYS == (*(f.name for f in dataclasses.fields(ReadoutSpec)), "kappa")
    assert description.READOUT_REQUIRED == tuple(f.name for f in dataclasses.fields(ReadoutSpec))


# --- the source run ---------------------------------------------------------------------------------------------
def _edit_tau_m(run: Path) -> None:
    text = (run / "config.yaml").read_text()
    assert "tau_m: 20.0" in text
    (run / "config.yaml").write_text(text.replace("tau_m: 20.0", "tau_m: 25.0", 1))


def _append_line(run: Path) -> None:
    text = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(text + "# edited after training\n")


@pytest.mark.parametrize("edit", [_edit_tau_m, _append_line], ids=["tau_m changed", "a line appended"])
def test_export_and_load_run_refuse_a_config_edited_after_training(run_dir, tmp_path, capsys, edit):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    edit(run)
    before = snapshot(run)
    out = tmp_path / "export"
    capsys.readouterr()
    assert main(["export", str(run), "--target", "rule", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    assert err.startswith(f"eprop-l2l: {run / 'config.yaml'}: differs from the one recorded in manifest.json"), err
    with pytest.raises(ConfigError) as error:
        api.load_run(run)
    assert one_line_error(error).startswith(f"{run / 'config.yaml'}: differs from the one recorded")
    assert main(["evaluate", str(run)]) == 2  # the same path as evaluate's
    assert "config.yaml: differs" in capsys.readouterr().err
    assert snapshot(run) == before and not out.exists()
