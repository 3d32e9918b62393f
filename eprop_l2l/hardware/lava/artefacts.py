"""Reading an export directory (``eprop-l2l export ... --target lava``) with numpy alone.

``rule.json`` is read into the torch side's own records (:mod:`eprop_l2l.hardware.description`, standard
library only): one schema, no copy of it here. What this program adds are the checks of what it implements
(LIF learner, e-prop 2, one demonstration, ...).

Every problem is an :class:`ArtefactError` whose ``str`` is one line naming the file and what is wrong; the Lava
program prints it and exits 2 before it writes anything.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..description import (
    FORMAT_VERSION,
    LEARNER_WEIGHTS,
    MODULE_WEIGHTS,
    ExportError,
    PlasticConnection,
    RuleDescription,
)
from ..description import RULE_FILE as RULE
from ..description import WEIGHTS_FILE as WEIGHTS

WEIGHT_KEYS = LEARNER_WEIGHTS + MODULE_WEIGHTS
# mirrors of torch-side constants (the modules that own them import torch); tests/test_lava_mirrors.py pins each
FORMAT = "eprop-l2l-export"  # the manifest's format: hardware/export.py (write_export, is_export, verify)
MANIFEST, DEMOS = "manifest.json", "demonstrations.npz"  # export.MANIFEST, export.DEMONSTRATIONS
# the demonstrations' arrays: hardware/export.py (_demonstrations) and hardware/fidelity.py (measure)
DEMO_KEYS = ("x", "context", "omega_target", "hand_target", "z_demo", "psi", "signals", "dw_in", "dw_rec",
             "z_test", "y_test", "mse_cart_after")
FIXED_KEYS = ("q_tag_in", "q_tag_rec", "q_w_in", "q_w_rec")  # fidelity.measure, the loihi format's arrays
# the neuron conventions this program implements: cells/spec.py RESET, REFRACTORY (NeuronSpec.reset, .refractory)
RESET = "subtract_v_th_next_step"
REFRACTORY = "counter_blocks_spike_and_masks_psi"


class ArtefactError(Exception):
    """One line: ``<file>: <what is wrong>``."""

    def __init__(self, where: str, message: str):
        super().__init__(f"{where}: {message}")


@dataclass
class Artefact:
    directory: Path
    manifest: dict
    rule: RuleDescription
    weights: dict
    demos: dict

    @property
    def neurons(self) -> dict:
        """The learner's ``NeuronSpec`` record."""
        return self.rule.learner.neurons

    @property
    def readout(self) -> dict:
        """The learner's ``ReadoutSpec`` record."""
        return self.rule.learner.readout

    @property
    def number_format(self) -> dict:
        """The number format as written (``kind`` and, for ``fixed``, the engine's format and constants)."""
        return self.rule.number_format.to_dict()

    @property
    def is_fixed(self) -> bool:
        return self.rule.number_format.is_fixed

    @property
    def n_tasks(self) -> int:
        return int(self.demos["x"].shape[0])

    def plastic(self, name: str) -> PlasticConnection:
        try:
            return self.rule.connection(name)
        except ExportError as err:
            raise ArtefactError(RULE, err.problem) from None


def _json(path: Path) -> dict:
    if not path.is_file():
        raise ArtefactError(str(path), "missing: not a complete eprop-l2l export directory")
    try:
        record = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as err:
        raise ArtefactError(str(path), f"not valid JSON ({str(err).splitlines()[0][:80]})") from None
    if not isinstance(record, dict):
        raise ArtefactError(str(path), "not a JSON object")
    return record


def _npz(path: Path, keys: tuple[str, ...]) -> dict:
    if not path.is_file():
        raise ArtefactError(str(path), "missing: not a complete eprop-l2l export directory")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, EOFError) as err:
        raise ArtefactError(str(path), f"unreadable ({str(err).splitlines()[0][:80]})") from None
    missing = [k for k in keys if k not in arrays]
    if missing:
        raise ArtefactError(str(path), f"missing arrays {missing}")
    for key, value in arrays.items():
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise ArtefactError(str(path), f"array {key!r} holds non-finite values")
    return arrays


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ArtefactError(where, message)


def load(directory: str | Path) -> Artefact:
    """Read and check an export directory; nothing is written."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtefactError(str(directory), "no such export directory")
    manifest = _json(directory / MANIFEST)
    where = str(directory / MANIFEST)
    _require(manifest.get("format") == FORMAT, where, f"format {manifest.get('format')!r}, expected {FORMAT!r}")
    version = manifest.get("format_version")
    _require(version == FORMAT_VERSION, where, f"format version {version!r}; this Lava program reads version "
             f"{FORMAT_VERSION} (export the model again with a matching eprop-l2l)")
    _require(manifest.get("target") == "lava", where, f"target {manifest.get('target')!r}; export with --target lava")
    files = manifest.get("files")
    _require(isinstance(files, dict), where, "no 'files' record")
    for name in (RULE, WEIGHTS, DEMOS):
        path = directory / name
        _require(name in files, where, f"lists no {name}")
        _require(path.is_file(), str(path), "missing: not a complete eprop-l2l export directory")
        _require(_sha256(path) == files[name], str(path), "sha256 differs from manifest.json (modified after export)")
    record = _json(directory / RULE)
    version = record.get("format_version")
    _require(version == FORMAT_VERSION, RULE, f"format version {version!r}; this Lava program reads version "
             f"{FORMAT_VERSION}")
    try:
        rule = RuleDescription.from_dict(record, where=RULE)
    except ExportError as err:
        raise ArtefactError(err.key, err.problem) from None
    weights = _npz(directory / WEIGHTS, WEIGHT_KEYS)
    art = Artefact(directory, manifest, rule, weights, {})
    _check_rule(art)
    keys = DEMO_KEYS + (FIXED_KEYS if art.is_fixed else ())
    art.demos = _npz(directory / DEMOS, keys)
    _check_shapes(art)
    return art


def _check_rule(art: Artefact) -> None:
    rule = art.rule
    neurons = art.neurons
    for key in ("model", "n", "alpha", "v_th", "n_ref", "input_scale", "surrogate", "gamma_pd"):
        _require(key in neurons, RULE, f"learner.neurons: missing {key!r}")
    _require(neurons["model"] == "lif", RULE, f"learner.neurons.model {neurons['model']!r}: the Lava learner "
             "implements LIF neurons")
    _require(neurons.get("reset", RESET) == RESET and neurons.get("refractory", REFRACTORY) == REFRACTORY, RULE,
             "learner.neurons: unsupported reset/refractory convention")
    _require(neurons["surrogate"] in ("triangle", "fast_sigmoid"), RULE,
             f"learner.neurons.surrogate {neurons['surrogate']!r}")
    module = rule.learning_signal.neurons
    _require(module.get("model", "lif") in ("lif", "alif"), RULE,
             f"learning_signal.neurons.model {module.get('model')!r}: the Lava error module implements LIF and ALIF")
    if module.get("model") == "alif":
        for key in ("n", "n_adaptive", "beta", "rho"):
            _require(key in module, RULE, f"learning_signal.neurons: missing {key!r} (ALIF)")
    _require(rule.kappa == 0.0, RULE, "kappa != 0: the Lava rule implements e-prop 2 (κ = 0)")
    _require(rule.n_updates == 1, RULE, "n_updates != 1: the Lava program runs one demonstration")
    names = sorted(rule.plastic_names)
    _require(names == ["w_in", "w_rec"], RULE, f"plastic connections {names}; the Lava program needs w_in and w_rec")
    for conn in rule.plastic:
        # rule.PRESYNAPTIC (hardware/rule.py): the pairing this program implements
        expected = {"w_in": ("input", "t"), "w_rec": ("learner_spikes", "t-1")}[conn.weights]
        _require((conn.pre, conn.pre_index) == expected, RULE,
                 f"plastic {conn.weights}: presynaptic signal {conn.pre!r}[{conn.pre_index!r}], "
                 f"expected {expected[0]!r}[{expected[1]!r}]")
        decay = conn.trace.decay
        _require(0.0 < decay < 1.0, RULE, f"plastic {conn.weights}: trace decay {decay!r} must lie in (0, 1)")
    post = rule.post_factor
    _require(post.name == "psi", RULE, f"post_factor {post.name!r}")  # the name rule.describe writes
    _require(math.isclose(post.v_th, neurons["v_th"]), RULE, "post_factor.v_th != learner v_th")
    fmt = art.number_format
    if art.is_fixed:
        for key in ("weight_exp", "trace_impulse", "y_scale", "y_bits", "tag_bits", "rounding"):
            _require(key in fmt, RULE, f"number_format: missing {key!r}")


def _check_shapes(art: Artefact) -> None:
    n, n_in = int(art.neurons["n"]), art.rule.learner.n_in
    w, d = art.weights, art.demos
    _require(w["w_in"].shape == (n, n_in), WEIGHTS, f"w_in shape {w['w_in'].shape}, expected {(n, n_in)}")
    _require(w["w_rec"].shape == (n, n), WEIGHTS, f"w_rec shape {w['w_rec'].shape}, expected {(n, n)}")
    _require(w["w_out"].shape[1] == n, WEIGHTS, f"w_out shape {w['w_out'].shape}")
    k, t = d["x"].shape[:2]
    _require(d["x"].shape == (k, t, n_in), DEMOS, f"x shape {d['x'].shape}")
    for key in ("z_demo", "psi", "signals", "z_test"):
        _require(d[key].shape == (k, t, n), DEMOS, f"{key} shape {d[key].shape}, expected {(k, t, n)}")
    _require(d["dw_in"].shape == (k, n, n_in) and d["dw_rec"].shape == (k, n, n), DEMOS, "dw_in/dw_rec shapes")
    _require(d["hand_target"].shape == (k, t, 2), DEMOS, f"hand_target shape {d['hand_target'].shape}")
