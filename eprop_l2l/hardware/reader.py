"""The one reader of an export directory (``eprop-l2l export``): numpy and the standard library only (no torch;
Python 3.10), so that the torch side (:func:`~.rule.load_rule`, :func:`~.export.verify`) and the Lava program
(:mod:`.lava.artefacts`) read every file through the same checks.

What it checks, in this order (``docs/export.md``, "What the reader checks"):

1. ``manifest.json`` (:func:`verify_manifest`): its format and version, and every file it lists present with its
   SHA-256 — before any other file is parsed; a file the manifest does not list is refused as well;
2. ``rule.json`` (:func:`read_rule`): the versioned schema of the records (:mod:`.description`: every key known,
   every value of its type) and the physical ranges of what it describes;
3. the ``.npz`` files (:func:`read_arrays`): each member's ``.npy`` header is read first and the array refused
   before anything is allocated when it claims another shape than the description implies, more than
   :data:`MAX_ARRAY_BYTES`, or more bytes than the member holds; never a pickle; float arrays finite.

Every problem is one :class:`~.description.ExportError` line naming the file (and the key or array).
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
import zlib
from pathlib import Path

import numpy as np

from .description import (
    FEEDBACK_MATRIX,
    LEARNER_WEIGHTS,
    MODULE_WEIGHTS,
    READ_VERSIONS,
    RULE_FILE,
    WEIGHTS_FILE,
    ExportError,
    Plant,
    RuleDescription,
)

FORMAT = "eprop-l2l-export"  # the manifest's "format"
MANIFEST = "manifest.json"
DEMONSTRATIONS = "demonstrations.npz"
# one array of an export: far above what `eprop-l2l export` writes (its largest, the demonstrations' ψ of at
# most export.MAX_TASKS tasks, is well under 1 GiB for the committed models), far below a crafted header's claim
MAX_ARRAY_BYTES = 4 << 30
NUMBER_KINDS = "biuf"  # bool, signed and unsigned integers, floats: the only dtypes an export writes


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0][:80] if text else type(err).__name__)


# --- 1. the manifest ------------------------------------------------------------------------------------------
def verify_manifest(directory: str | Path) -> dict:
    """The manifest of an export directory, after checking that the files it lists, and only those, are there
    with their SHA-256; nothing else is parsed before this returns."""
    directory = Path(directory)
    path = directory / MANIFEST
    if not directory.is_dir():
        raise ExportError(str(directory), "no such export directory")
    if not path.is_file():
        raise ExportError(str(path), "missing: not an eprop-l2l export directory")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ExportError(str(path), f"not valid JSON ({_first_line(err)})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        found = manifest.get("format") if isinstance(manifest, dict) else None
        raise ExportError(str(path), f"format {found!r}: not an eprop-l2l export manifest (expected {FORMAT!r})")
    version = manifest.get("format_version")
    if isinstance(version, bool) or version not in READ_VERSIONS:
        raise ExportError(str(path), f"format version {version!r}; this eprop-l2l reads versions "
                          f"{', '.join(map(str, READ_VERSIONS))} (export the model again)")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in files.items()):
        raise ExportError(str(path), "files: must map file names to SHA-256 digests")
    for name, digest in files.items():
        if name in ("", ".", "..", MANIFEST) or Path(name).name != name:  # never a file outside the directory
            raise ExportError(str(path), f"files: {name!r} is not a file of this export directory")
        file = directory / name
        if not file.is_file():
            raise ExportError(str(file), "missing: listed in manifest.json but not in the export directory")
        if sha256_file(file) != digest:
            raise ExportError(str(file), "changed since the export: its sha256 differs from the one manifest.json "
                              "records (SHA-256 mismatch)")
    for file in sorted(directory.iterdir()):  # folders are the Lava program's reports (DIR/lava_<precision>)
        # beside a report being written, its writer's lock (outputs.claim: .lava_<precision>.lock): not export data
        report_lock = file.name.startswith(".lava_") and file.name.endswith(".lock")
        if file.is_file() and file.name != MANIFEST and file.name not in files and not report_lock:
            raise ExportError(str(file), "not listed in manifest.json: an export holds only the files its manifest "
                              "lists (remove it, or export again)")
    return manifest


# --- 2. rule.json (and plant.json) ---------------------------------------------------------------------------
def _json_file(path: str | Path, where: str, missing: str):
    """The JSON value in ``path``; a missing or malformed file is one line naming ``where``."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(where, missing)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError) as err:
        raise ExportError(where, f"not valid JSON ({_first_line(err)})") from None


def read_rule(path: str | Path, where: str | None = None) -> RuleDescription:
    """The rule description in ``path``: the schema and physical ranges of :meth:`RuleDescription.from_dict`."""
    where = where or str(path)
    record = _json_file(path, where, "missing: not an eprop-l2l export directory")
    return RuleDescription.from_dict(record, where=where)


def read_plant(path: str | Path, where: str | None = None) -> Plant:
    """The plant in ``path`` (``plant.json``): the schema and ranges of :meth:`.description.Plant.from_dict`."""
    where = where or str(path)
    record = _json_file(path, where, "missing: not a complete eprop-l2l export directory")
    return Plant.from_dict(record, where=where)


def weight_shapes(rule: RuleDescription) -> dict[str, tuple[int, ...]]:
    """The arrays ``weights.npz`` holds, each with the shape the description implies (``b_out`` when the
    readout has a bias; the error module's, or e-prop 1's own feedback matrix ``b_fb``)."""
    learner, signal = rule.learner, rule.learning_signal
    n, n_in, n_out = learner.neurons["n"], learner.n_in, learner.readout["n_out"]
    shapes = dict(zip(LEARNER_WEIGHTS, ((n, n_in), (n, n), (n_out, n)), strict=True))
    if rule.is_feedback:
        if signal.projection == FEEDBACK_MATRIX:
            shapes[FEEDBACK_MATRIX] = (n, n_out)
    else:
        m, module_in = signal.neurons["n"], sum(width for _, width in signal.inputs)
        shapes.update(zip(MODULE_WEIGHTS, ((m, module_in), (m, m), (n, m)), strict=True))
    if learner.readout["bias"]:
        shapes["b_out"] = (n_out,)
    return shapes


def read_weights(path: str | Path, rule: RuleDescription, where: str | None = None) -> dict:
    """``weights.npz``: exactly the arrays of :func:`weight_shapes`, of those shapes."""
    return read_arrays(path, weight_shapes(rule), where=where)


# --- 3. the arrays --------------------------------------------------------------------------------------------
def _header(handle, where: str, key: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, bytes of the header) of one ``.npy`` member, read from its header alone."""
    version = np.lib.format.read_magic(handle)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
    else:
        raise ExportError(where, f"array {key!r}: .npy format version {version} (an export writes 1.0 or 2.0)")
    return tuple(shape), dtype, handle.tell()


def read_arrays(path: str | Path, shapes: dict[str, tuple[int, ...] | None], optional: tuple[str, ...] = (),
                where: str | None = None) -> dict:
    """The arrays of an ``.npz`` file: every one named in ``shapes`` (those in ``optional`` may be absent), no
    other, each with its shape where one is given; headers are checked before any array is read."""
    path = Path(path)
    where = where or str(path)
    if not path.is_file():
        raise ExportError(where, "missing: not a complete eprop-l2l export directory")
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename[:-4]: info for info in archive.infolist() if info.filename.endswith(".npy")}
            others = [info.filename for info in archive.infolist() if not info.filename.endswith(".npy")]
            if others:
                raise ExportError(where, f"{others[0]!r}: not an array (an .npz holds .npy members only)")
            unknown = sorted(set(members) - set(shapes))
            if unknown:
                raise ExportError(where, f"array {unknown[0]!r}: unknown (expected {', '.join(shapes)})")
            missing = [k for k in shapes if k not in members and k not in optional]
            if missing:
                raise ExportError(where, f"missing arrays {missing}")
            for key, info in members.items():  # every header before any array
                with archive.open(info) as handle:
                    shape, dtype, offset = _header(handle, where, key)
                if dtype.hasobject or dtype.kind not in NUMBER_KINDS:
                    raise ExportError(where, f"array {key!r}: dtype {dtype} (an export holds numbers only)")
                expected = shapes[key]
                if expected is not None and shape != tuple(expected):
                    raise ExportError(where, f"array {key!r}: shape {shape}, expected {tuple(expected)}")
                claimed = math.prod(shape) * dtype.itemsize
                if claimed > MAX_ARRAY_BYTES:
                    raise ExportError(where, f"array {key!r}: its header claims shape {shape} ({claimed:.3g} bytes), "
                                      f"more than an export holds ({MAX_ARRAY_BYTES} bytes)")
                if claimed != info.file_size - offset:
                    raise ExportError(where, f"array {key!r}: its header claims {claimed} bytes, the file holds "
                                      f"{info.file_size - offset} (truncated or corrupted)")
            arrays = {}
            for key, info in members.items():
                with archive.open(info) as handle:
                    arrays[key] = np.lib.format.read_array(handle, allow_pickle=False)
    except ExportError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, zlib.error, KeyError,
            NotImplementedError) as err:
        raise ExportError(where, f"unreadable, truncated or corrupted ({_first_line(err)})") from None
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ExportError(where, f"array {key!r} holds non-finite values")
    return arrays


# --- the export -----------------------------------------------------------------------------------------------
def read_rule_files(directory: str | Path) -> tuple[RuleDescription, dict]:
    """``(rule, weights)`` of ``rule.json`` and ``weights.npz`` in ``directory`` (no manifest check: also the
    export's own reading of what it has just written, before its manifest exists)."""
    directory = Path(directory)
    rule = read_rule(directory / RULE_FILE)
    return rule, read_weights(directory / WEIGHTS_FILE, rule)


def read_export(directory: str | Path) -> tuple[dict, RuleDescription, dict]:
    """``(manifest, rule, weights)`` of an export directory: the manifest verified first."""
    manifest = verify_manifest(directory)
    return (manifest, *read_rule_files(directory))
