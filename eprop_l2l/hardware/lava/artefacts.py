"""Reading an export directory (``eprop-l2l export ... --target lava``) with numpy alone.

Every file is read by the package's one artefact reader (:mod:`eprop_l2l.hardware.reader`, torch-free): the
manifest's hashes first, then ``rule.json`` and ``plant.json`` (the plant that scores the movements; an export
without it was scored on the two-joint arm: :func:`.plants.legacy_arm`) into the torch side's own records
(:mod:`eprop_l2l.hardware.description`: one schema and its physical ranges, no copy of them here), then the
``.npz`` files with their headers bounded before anything is allocated. What this program adds are the checks of
what it implements (LIF learner, e-prop 2, one demonstration, ...) and the demonstrations' shapes.

Every problem is an :class:`ArtefactError` whose ``str`` is one line naming the file and what is wrong; the Lava
program prints it and exits 2 before it writes anything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from ... import units
from .. import reader
from ..description import (
    FORMAT_VERSION,  # noqa: F401  (the version this program reads: tests/test_lava_mirrors.py)
    LEARNER_WEIGHTS,
    MODULE_WEIGHTS,
    PLANT_FILE,
    ExportError,
    Plant,
    PlasticConnection,
    RuleDescription,
)
from ..description import RULE_FILE as RULE
from ..description import WEIGHTS_FILE as WEIGHTS
from .plants import legacy_arm

WEIGHT_KEYS = LEARNER_WEIGHTS + MODULE_WEIGHTS
FORMAT = reader.FORMAT  # the manifest's format
MANIFEST, DEMOS = reader.MANIFEST, reader.DEMONSTRATIONS
# mirrors of torch-side constants (the modules that own them import torch); tests/test_lava_mirrors.py pins each
# the demonstrations' arrays: hardware/export.py (_demonstrations) and hardware/fidelity.py (measure)
# (with the plant's metric after the update: "<metric>_after", and the loihi format's "q_<metric>_after")
DEMO_KEYS = ("x", "context", "omega_target", "hand_target", "z_demo", "psi", "signals", "dw_in", "dw_rec",
             "z_test", "y_test")
FIXED_KEYS = ("q_tag_in", "q_tag_rec", "q_w_in", "q_w_rec")  # fidelity.measure, the loihi format's arrays
# the loihi format's other arrays (fidelity.measure), which this program reads where present
EMULATION_KEYS = ("q_signals", "q_z_demo")
# the demonstrations' mask (hardware/export.py, _demonstrations since format version 2): e-prop 1's output error
FEEDBACK_KEYS = ("mask",)
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
    plant: Plant  # what scores the movements (plant.json)
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
    def metric(self) -> str:
        """The plant's metric, the name of the exported PyTorch numbers (``<metric>_after``)."""
        return self.plant.metric

    @property
    def n_tasks(self) -> int:
        return int(self.demos["x"].shape[0])

    def plastic(self, name: str) -> PlasticConnection:
        try:
            return self.rule.connection(name)
        except ExportError as err:
            raise ArtefactError(RULE, err.problem) from None


def _require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ArtefactError(where, message)


def load(directory: str | Path) -> Artefact:
    """Read and check an export directory; nothing is written."""
    directory = Path(directory)
    try:
        manifest = reader.verify_manifest(directory)  # before any other file is parsed
        where = str(directory / MANIFEST)
        _require(manifest.get("target") == "lava", where,
                 f"target {manifest.get('target')!r}; export with --target lava")
        for name in (RULE, WEIGHTS, DEMOS):
            _require(name in manifest["files"], where, f"lists no {name}")
        rule = reader.read_rule(directory / RULE, where=RULE)
        weights = reader.read_weights(directory / WEIGHTS, rule)
        if PLANT_FILE in manifest["files"]:
            plant = reader.read_plant(directory / PLANT_FILE, where=PLANT_FILE)
        else:  # written before the plant record: every such export was scored on the arm at the network's step
            plant = legacy_arm(units.step_seconds(float(rule.learner.readout["dt_ms"])))
        art = Artefact(directory, manifest, rule, plant, weights, {})
        _check_rule(art)
        metric = (f"{plant.metric}_after",)
        emulation = EMULATION_KEYS + (f"q_{plant.metric}_after",)
        shapes = dict.fromkeys(DEMO_KEYS + metric + FIXED_KEYS + emulation + FEEDBACK_KEYS)  # shapes: _check_shapes
        optional = emulation + FEEDBACK_KEYS + (() if art.is_fixed else FIXED_KEYS)
        art.demos = reader.read_arrays(directory / DEMOS, shapes, optional=optional)
    except ExportError as err:
        raise ArtefactError(err.key, err.problem) from None
    _check_shapes(art)
    return art


def _check_rule(art: Artefact) -> None:
    rule = art.rule
    neurons = art.neurons
    for key in ("model", "n", "alpha", "v_th", "n_ref", "input_scale", "surrogate", "gamma_pd"):
        _require(key in neurons, RULE, f"learner.neurons: missing {key!r}")
    _require(neurons["model"] in ("lif", "alif"), RULE, f"learner.neurons.model {neurons['model']!r}: the Lava "
             "learner implements LIF and ALIF neurons")
    if neurons["model"] == "alif":
        for key in ("n_adaptive", "beta", "rho"):
            _require(key in neurons, RULE, f"learner.neurons: missing {key!r} (ALIF)")
    _require(neurons.get("reset", RESET) == RESET and neurons.get("refractory", REFRACTORY) == REFRACTORY, RULE,
             "learner.neurons: unsupported reset/refractory convention")
    _require(neurons["surrogate"] in ("triangle", "fast_sigmoid"), RULE,
             f"learner.neurons.surrogate {neurons['surrogate']!r}")
    if not rule.is_feedback:  # e-prop 1's feedback signal: its kinds and projection are the reader's checks
        module = rule.learning_signal.neurons
        _require(module.get("model", "lif") in ("lif", "alif"), RULE, f"learning_signal.neurons.model "
                 f"{module.get('model')!r}: the Lava error module implements LIF and ALIF")
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
    post = rule.post_factor
    _require(post.name == "psi", RULE, f"post_factor {post.name!r}")  # the name rule.describe writes
    _require(math.isclose(post.v_th, neurons["v_th"]), RULE, "post_factor.v_th != learner v_th")
    fmt = art.number_format
    if art.is_fixed:
        for key in ("weight_exp", "trace_impulse", "y_scale", "y_bits", "tag_bits", "rounding"):
            _require(key in fmt, RULE, f"number_format: missing {key!r}")


def _check_shapes(art: Artefact) -> None:
    """The demonstrations' shapes (the weights' are the reader's, from the description)."""
    n, n_in = int(art.neurons["n"]), art.rule.learner.n_in
    d = art.demos
    k, t = d["x"].shape[:2]
    _require(d["x"].shape == (k, t, n_in), DEMOS, f"x shape {d['x'].shape}")
    for key in ("z_demo", "psi", "signals", "z_test"):
        _require(d[key].shape == (k, t, n), DEMOS, f"{key} shape {d[key].shape}, expected {(k, t, n)}")
    _require(d["dw_in"].shape == (k, n, n_in) and d["dw_rec"].shape == (k, n, n), DEMOS, "dw_in/dw_rec shapes")
    dims = art.plant.dims
    _require(d["hand_target"].shape == (k, t, dims), DEMOS, f"hand_target shape {d['hand_target'].shape}, expected "
             f"{(k, t, dims)} (the {art.plant.kind}'s path)")
    n_out = int(art.readout["n_out"])
    _require(len(art.plant.start) == n_out, PLANT_FILE, f"start: {len(art.plant.start)} joints, the readout drives "
             f"{n_out}")
    if art.rule.is_feedback:  # e-prop 1's output error compares the readout with the target under the mask
        _require(d["omega_target"].shape == (k, t, n_out), DEMOS, f"omega_target shape {d['omega_target'].shape}, "
                 f"expected {(k, t, n_out)}")
        _require("mask" in d and d["mask"].shape == (k, t), DEMOS, "mask: e-prop 1's output error needs the "
                 f"demonstrations' mask of shape {(k, t)}")


def fixed_module_format(art: Artefact) -> dict:
    """The error module's fixed-point format as the export states it (``number_format.error_module``, written by
    ``hardware/fixed_module.py``'s ``module_record``); refused in one line where the Lava models have none."""
    if art.rule.is_feedback:
        raise ArtefactError("--signal", "e-prop 1's readout and output error have floating-point models only (use "
                            "--precision float with --signal module)")
    if art.rule.learning_signal.neurons.get("model") != "lif":
        raise ArtefactError("--precision", "fixed with --signal module: the fixed-point error module has LIF "
                            "neurons only (this module is ALIF; use --precision float)")
    record = art.number_format.get("error_module")
    keys = ("weight_bits", "decay_bits", "v_frac_bits", "weight_exp", "v_exp", "signal_exp", "v_th_int",
            "alpha_mant", "filter_decay_mant")
    if not isinstance(record, dict) or any(k not in record for k in keys):
        raise ArtefactError("rule.json", "number_format.error_module: missing or incomplete (export again with "
                            "--precision loihi for the module at fixed point)")
    if int(record["weight_bits"]) != 8:
        raise ArtefactError("rule.json", f"number_format.error_module.weight_bits: {record['weight_bits']} (Lava's "
                            "fixed-point Dense holds 8-bit weights)")
    return record
