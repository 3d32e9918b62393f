"""The constants and small formulas that the Lava side mirrors from the torch side are pinned equal to their sources.

The Lava program (``eprop_l2l/hardware/lava``, ``procs/`` included) runs in its own CPython 3.10 environment
without torch (``.venv-lava``), so it cannot import the package's torch modules and repeats what it needs: the
export's format name, file names and array keys (:mod:`eprop_l2l.hardware.rule`,
:mod:`eprop_l2l.hardware.export`, :mod:`eprop_l2l.hardware.fidelity`), the neuron conventions, the model and
surrogate names (:mod:`eprop_l2l.cells.spec`, :mod:`eprop_l2l.cells.spike`), the learning-engine formats
(:mod:`eprop_l2l.inner_loop.fixed_point`), the plants that score the movements (:mod:`.lava.plants`: the arm's
start posture and segments of :mod:`eprop_l2l.task_families.arm_kinematics` for exports without ``plant.json``,
the two-joint arm's and the ED-Scorbot's kinematics and metrics, the record :func:`eprop_l2l.hardware.plant
.plant_record` writes), and the LIF step, ψ, readout and fidelity formulas. Nothing else keeps
the copies equal, so without these tests they could drift apart silently. (The rule description itself, its
records, defaults and version, is not copied: both sides import :mod:`eprop_l2l.hardware.description`.)

``artefacts``, ``report`` and ``launcher`` import no Lava (lava-nc is not installed here) and are imported
directly. ``network`` and ``procs/models`` import lava-nc at the top, so their values are read from the source
with ``ast``, and their functions are compiled from the source alone and run against the torch implementation.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import inspect
import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from eprop_l2l.cells.alif import ALIF
from eprop_l2l.cells.lif import LIF
from eprop_l2l.cells.readout import LeakyReadout
from eprop_l2l.cells.spec import REFRACTORY, RESET, NeuronSpec
from eprop_l2l.cells.spike import SURROGATES
from eprop_l2l.cli import main
from eprop_l2l.hardware import description, export, fidelity, rule
from eprop_l2l.hardware.description import NumberFormat
from eprop_l2l.hardware.lava import artefacts, launcher, plants, report
from eprop_l2l.hardware.plant import SCORBOT_START, plant_record
from eprop_l2l.hardware.rule import load_rule
from eprop_l2l.inner_loop.fixed_point import LOIHI, ROUNDING, FixedFormat, quantize_weights
from eprop_l2l.task_families import FAMILIES, arm, make_task_family, scorbot_kinematics
from eprop_l2l.task_families.arm_kinematics import hand_position
from eprop_l2l.task_families.base import TaskBatch
from eprop_l2l.task_families.scorbot import ScorbotBrownian

ROOT = Path(__file__).resolve().parent.parent
LAVA = ROOT / "eprop_l2l" / "hardware" / "lava"
ARTEFACTS, NETWORK, MODELS, RUN = (LAVA / "artefacts.py", LAVA / "network.py", LAVA / "procs" / "models.py",
                                   LAVA / "run.py")
QUIET = ("wandb.mode=disabled", "run.progress=false")


# --- reading the sources -------------------------------------------------------------------------------------
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _function(path: Path, name: str) -> ast.FunctionDef:
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.FunctionDef) and node.name == name:
            return node
    raise LookupError(f"{path.name}: no function {name}")


def compiled(path: Path, name: str, **namespace):
    """The function ``name`` of a source file, compiled on its own (its module imports lava, not installed here)."""
    module = ast.Module(body=[_function(path, name)], type_ignores=[])
    exec(compile(module, str(path), "exec"), namespace)
    return namespace[name]


def _key(node: ast.AST):
    """``"k"`` of ``x["k"]``, ``x.get("k", ...)`` or ``x.k`` (a record's field); None for anything else."""
    if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Constant):
        return node.slice.value
    if isinstance(node, ast.Attribute):
        return node.attr
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get"
            and node.args and isinstance(node.args[0], ast.Constant)):
        return node.args[0].value
    return None


def compared_with(path: Path, key: str) -> set:
    """The literals a source file compares ``x[key]`` or ``x.get(key)`` with (``==``, ``!=``, ``in (...)``)."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Compare) and _key(node.left) == key:
            for other in node.comparators:
                try:
                    value = ast.literal_eval(other)
                except ValueError:  # a name (FORMAT, RESET): not a literal copy
                    continue
                found |= set(value) if isinstance(value, tuple) else {value}
    return found


def get_fallbacks(path: Path, key: str) -> set:
    """The literal fallbacks of ``x.get(key, <literal>)`` in a source file."""
    found = set()
    for node in ast.walk(_tree(path)):
        if isinstance(node, ast.Call) and _key(node) == key and isinstance(node.func, ast.Attribute):
            if len(node.args) == 2 and isinstance(node.args[1], ast.Constant):
                found.add(node.args[1].value)
    return found


def dict_values(path: Path, key: str) -> list[ast.expr]:
    """The value expressions of ``{key: ...}`` in every dict literal of a source file."""
    return [value for node in ast.walk(_tree(path)) if isinstance(node, ast.Dict)
            for k, value in zip(node.keys, node.values, strict=True) if isinstance(k, ast.Constant) and k.value == key]


def keyword_values(path: Path, key: str) -> list[ast.expr]:
    """The value expressions of ``key=...`` in every call of a source file (a record built by keyword)."""
    return [k.value for node in ast.walk(_tree(path)) if isinstance(node, ast.Call) for k in node.keywords
            if k.arg == key]


def dict_literal(path: Path, function: str, key: str) -> dict:
    """The dict literal in ``function`` that has the key ``key``."""
    for node in ast.walk(_function(path, function)):
        if isinstance(node, ast.Dict) and any(isinstance(k, ast.Constant) and k.value == key for k in node.keys):
            return ast.literal_eval(node)
    raise LookupError(f"{path.name}: no dict literal with {key!r} in {function}")


def required_keys(path: Path, function: str) -> dict[str, tuple]:
    """``{container: keys}`` of each ``for key in (<literal keys>): _require(key in <container>, ...)``."""
    found = {}
    for loop in ast.walk(_function(path, function)):
        if isinstance(loop, ast.For) and isinstance(loop.iter, ast.Tuple):
            for node in ast.walk(loop):
                if (isinstance(node, ast.Compare) and isinstance(node.ops[0], ast.In)
                        and isinstance(node.left, ast.Name) and node.left.id == loop.target.id):
                    found[ast.unparse(node.comparators[0])] = ast.literal_eval(loop.iter)
    return found


def optional_arrays(path: Path) -> set:
    """The arrays a source file reads only where present: ``"name" in d`` (``d``: the demonstrations)."""
    return {node.left.value for node in ast.walk(_tree(path))
            if isinstance(node, ast.Compare) and isinstance(node.left, ast.Constant) and isinstance(node.ops[0], ast.In)
            and isinstance(node.comparators[0], ast.Name) and node.comparators[0].id == "d"}


def field_default(cls, name: str):
    """The default of a dataclass field (the factory's value for a mutable default)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    return field.default_factory() if field.default is dataclasses.MISSING else field.default


def _literal_strings(expressions: list[ast.expr]) -> set:
    return {e.value for e in expressions if isinstance(e, ast.Constant) and isinstance(e.value, str)}


def _y_range(y_bits: int) -> tuple[int, int]:
    """The third factor's integer range as ``network.run_task`` computes it from ``y_bits``."""
    (low,), (high,) = dict_values(NETWORK, "y_min"), dict_values(NETWORK, "y_max")
    return tuple(eval(compile(ast.Expression(e), str(NETWORK), "eval"), {"y_bits": y_bits}) for e in (low, high))


_check_rule_keys = required_keys(ARTEFACTS, "_check_rule")
_quantize_register = compiled(NETWORK, "quantize_register", np=np)

# --- constants: (Lava-side copy, torch-side source) -----------------------------------------------------------
MIRRORS = [
    pytest.param({artefacts.FORMAT}, _literal_strings(dict_values(ROOT / "eprop_l2l/hardware/export.py", "format"))
                 | compared_with(ROOT / "eprop_l2l/hardware/export.py", "format"),
                 id="artefacts.FORMAT = the manifest format export writes and verify reads"),
    pytest.param(artefacts.MANIFEST, export.MANIFEST, id="artefacts.MANIFEST = export.MANIFEST"),
    pytest.param(artefacts.RULE, rule.RULE_FILE, id="artefacts.RULE = rule.RULE_FILE"),
    pytest.param(artefacts.DEMOS, export.DEMONSTRATIONS, id="artefacts.DEMOS = export.DEMONSTRATIONS"),
    pytest.param(artefacts.RESET, RESET, id="artefacts.RESET = spec.RESET"),
    pytest.param(artefacts.RESET, field_default(NeuronSpec, "reset"), id="artefacts.RESET = NeuronSpec.reset"),
    pytest.param(artefacts.REFRACTORY, REFRACTORY, id="artefacts.REFRACTORY = spec.REFRACTORY"),
    pytest.param(artefacts.REFRACTORY, field_default(NeuronSpec, "refractory"),
                 id="artefacts.REFRACTORY = NeuronSpec.refractory"),
    pytest.param(set(description.NUMBER_KINDS), {NumberFormat().kind, FixedFormat().to_dict()["kind"]},
                 id="description.NUMBER_KINDS = float32 (NumberFormat default) and FixedFormat.to_dict kind"),
    pytest.param(compared_with(ARTEFACTS, "surrogate"), set(SURROGATES), id="artefacts surrogates = spike.SURROGATES"),
    pytest.param(compared_with(ARTEFACTS, "model"), {LIF(n_in=1, n_rec=1, dt_ms=1.0).spec.model,
                                                    ALIF(n_in=1, n_rec=1, dt_ms=1.0).spec.model},
                 id="artefacts neuron models = LIF.spec.model (learner), LIF/ALIF (the error modules rule.py exports; "
                    "a cuba_lif population is refused there)"),
    pytest.param(compared_with(ARTEFACTS, "name"), _literal_strings(keyword_values(ROOT / "eprop_l2l/hardware/rule.py",
                                                                                   "name")),
                 id="artefacts post_factor name = rule.describe post_factor name"),
    pytest.param(dict_literal(ARTEFACTS, "_check_rule", "w_rec"), rule.PRESYNAPTIC,
                 id="artefacts presynaptic signals = rule.PRESYNAPTIC"),
    pytest.param(plants.PHI0, arm.PHI0, id="plants.PHI0 = arm.PHI0"),
    pytest.param(plants.SEGMENTS, tuple(inspect.signature(hand_position).parameters[n].default for n in ("l1", "l2")),
                 id="plants.SEGMENTS = arm_kinematics.hand_position l1, l2"),
    pytest.param(plants.CM_PER_M, scorbot_kinematics.CM_PER_M, id="plants.CM_PER_M = scorbot_kinematics.CM_PER_M"),
    pytest.param(set(description.PLANT_METRICS), {cls.primary_metric for cls in FAMILIES.values()
                                                  if isinstance(cls, type) and issubclass(cls, (arm.ArmTrials,
                                                                                                ScorbotBrownian))},
                 id="description.PLANT_METRICS = the plant families' primary metrics"),
    pytest.param(set(plants.FORWARD), set(description.PLANT_GEOMETRY), id="plants.FORWARD = PLANT_GEOMETRY kinds"),
    pytest.param(inspect.signature(_quantize_register).parameters["weight_bits"].default, LOIHI.weight_bits,
                 id="network.quantize_register weight_bits = LOIHI.weight_bits"),
    pytest.param({ast.literal_eval(v) for v in dict_values(NETWORK, "num_weight_bits")}, {LOIHI.weight_bits},
                 id="network LearningDense num_weight_bits = LOIHI.weight_bits"),
    pytest.param(_y_range(LOIHI.y_bits), LOIHI.y_range, id="network y_min, y_max = LOIHI.y_range"),
    pytest.param(_y_range(5), FixedFormat(y_bits=5).y_range, id="network y_min, y_max = FixedFormat(y_bits=5).y_range"),
]


@pytest.mark.parametrize("lava, source", MIRRORS)
def test_the_lava_copy_equals_its_source(lava, source):
    assert lava == source


def test_the_names_the_lava_side_compares_with_are_the_torch_side_choices():
    assert compared_with(ARTEFACTS, "target") == {"lava"} and "lava" in export.TARGETS
    surrogates = compared_with(NETWORK, "surrogate") | compared_with(MODELS, "surrogate")
    assert surrogates and surrogates <= set(SURROGATES)
    rounding = get_fallbacks(NETWORK, "rounding") | compared_with(MODELS, "rounding")
    assert rounding and rounding <= set(ROUNDING)


def test_the_neuron_keys_the_lava_side_requires_are_in_the_exported_spec():
    spec = LIF(n_in=1, n_rec=1, dt_ms=1.0).spec.to_dict()
    assert set(_check_rule_keys["neurons"]) <= set(spec), set(_check_rule_keys["neurons"]) - set(spec)


def test_the_fixed_point_keys_the_lava_side_requires_are_in_the_exported_number_format():
    from eprop_l2l.inner_loop.fixed_point import Scales

    per_connection = {"w_in": 0, "w_rec": 0}
    scales = Scales(per_connection, per_connection, 0, per_connection, per_connection)
    neurons = LIF(n_in=1, n_rec=1, dt_ms=1.0).spec.to_dict()
    rule_like = SimpleNamespace(inner_lr=1e-3, learner=SimpleNamespace(neurons=neurons))
    written = export.engine_format(rule_like, LOIHI, scales).to_dict()
    assert set(_check_rule_keys["fmt"]) <= set(written), set(_check_rule_keys["fmt"]) - set(written)


def test_the_launcher_looks_for_the_environment_the_makefile_creates(tmp_path, monkeypatch):
    venv = re.search(r"^LAVA_VENV\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M).group(1)
    python = tmp_path / venv / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.touch()
    monkeypatch.delenv(launcher.ENV_VAR, raising=False)
    assert launcher.lava_python(tmp_path) == python


def test_the_figure_the_cli_draws_reads_a_file_the_lava_program_writes():
    cli_reads = {c.value for c in ast.walk(_function(ROOT / "eprop_l2l/commands/hardware.py", "main"))
                 if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.endswith(".npz")}
    run_writes = {c.value for c in ast.walk(_function(RUN, "main"))
                  if isinstance(c, ast.Constant) and isinstance(c.value, str) and c.value.endswith(".npz")}
    assert cli_reads and cli_reads <= run_writes


def test_the_lava_side_reads_the_rule_descriptions_own_records():
    """rule.json's schema, version and file name and the arrays of weights.npz are not mirrored: artefacts imports
    them from the torch-free records (:mod:`eprop_l2l.hardware.description`) that the torch side writes and reads."""
    assigned = {t.id for node in ast.walk(_tree(ARTEFACTS)) if isinstance(node, ast.Assign) for t in node.targets
                if isinstance(t, ast.Name)}
    assigned |= {e.id for node in ast.walk(_tree(ARTEFACTS)) if isinstance(node, ast.Assign) for t in node.targets
                 if isinstance(t, ast.Tuple) for e in t.elts if isinstance(e, ast.Name)}
    assert "MANIFEST" in assigned and not assigned & {"FORMAT_VERSION", "RULE", "WEIGHTS"}, assigned
    assert artefacts.RuleDescription is rule.RuleDescription and artefacts.FORMAT_VERSION == export.FORMAT_VERSION
    assert artefacts.WEIGHTS == rule.WEIGHTS_FILE
    assert artefacts.WEIGHT_KEYS == description.LEARNER_WEIGHTS + description.MODULE_WEIGHTS


# --- formulas: the Lava side's copy computes what the torch side computes ---------------------------------------
def test_the_legacy_arm_plant_is_the_arm_kinematics():
    """An export without plant.json: start posture, segments 0.5 + 0.5, relative elbow angle and the integration
    over the step."""
    omega = torch.randn(50, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 20
    for dt_ms in (1.0, 2.0):
        expected = arm.arm_forward(omega, dt_ms=dt_ms).numpy()
        got = plants.path(plants.legacy_arm(dt_ms / 1000), omega.numpy())
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    assert plants.legacy_arm(1e-3) == plant_record(make_task_family("arm_sines", dt_ms=1.0))


PLANT_FAMILIES = [("arm_sines", {"dt_ms": 1.0}), ("arm_brownian", {"dt_ms": 0.5}),
                  ("scorbot_brownian", {"dt_ms": 1.0}), ("scorbot_brownian", {"dt_ms": 1.0, "kinematic_step_s": 0.02})]


@pytest.mark.parametrize("name, fields", PLANT_FAMILIES)
def test_the_numpy_plants_are_the_families_kinematics_and_metric(name, fields):
    """The plant record of each family, through plants.py, gives the family's own end-effector path of random
    joint velocities (float64, to 1e-10) and its primary metric (``family.errors``) against a target path."""
    family = make_task_family(name, **fields)
    record = plant_record(family)
    assert record == description.Plant.from_dict(json.loads(json.dumps(record.to_dict())))  # as plant.json holds it
    g = torch.Generator().manual_seed(11)
    omega = torch.randn(3, 200, 2, generator=g, dtype=torch.float64) * 3.0  # rad/s: paths far from the start
    target_omega = torch.randn(3, 200, 2, generator=g, dtype=torch.float64) * 3.0
    produced = (family.produced_path(omega) if isinstance(family, ScorbotBrownian)
                else arm.arm_forward(omega, dt_ms=family.dt_ms)).numpy()
    got = plants.path(record, omega.numpy())
    assert got.shape == (3, 200, record.dims)
    np.testing.assert_allclose(got, produced, rtol=0, atol=1e-10)
    target = plants.path(record, target_omega.numpy())
    ones = torch.ones(3, 200, dtype=torch.float64)
    batch = TaskBatch(ones[..., None], target_omega, ones, {"hand": torch.from_numpy(target)}, dt_ms=family.dt_ms)
    expected = family.errors(omega, batch)[family.primary_metric].numpy()
    np.testing.assert_allclose(plants.score(record, got, target), expected, rtol=1e-10, atol=0)
    assert expected.min() > 0  # the paths differ: the comparison is not of zeros


def test_the_scorbot_plant_record_holds_the_kinematics_constants():
    record = plant_record(make_task_family("scorbot_brownian", dt_ms=1.0))
    k = scorbot_kinematics
    assert record.geometry == {"d1": k.D1, "a1": k.A1, "a2": k.A2, "a3": k.A3, "a4": k.A4, "d_offset": k.D_OFFSET}
    assert record.step_s == ScorbotBrownian.kinematic_step_s and record.metric == ScorbotBrownian.primary_metric
    # the start posture: the family's angles after one step of zero velocity, its hand at the documented point
    still = k.moving_joint_angles(torch.zeros(1, 2, dtype=torch.float64), record.step_s)[0]
    assert record.start == SCORBOT_START == tuple(still.tolist())
    np.testing.assert_allclose(plants.end_effector(record, np.zeros((1, 2))), [[0.92, -0.033, 0.3585]], atol=1e-15)


@pytest.mark.parametrize("scaling", ["new", "old"])
def test_report_readout_is_the_leaky_readout(scaling):
    readout = LeakyReadout(6, 2, tau_out=15.0, dt_ms=1.0, input_scaling=scaling, bias=True)
    g = torch.Generator().manual_seed(1)
    params = {"w_out": torch.randn(2, 6, generator=g, dtype=torch.float64),
              "b_out": torch.randn(2, generator=g, dtype=torch.float64)}
    z = (torch.rand(1, 40, 6, generator=g) < 0.3).double()
    expected = readout.run(params, z)[0].numpy()
    got = report.readout(z[0].numpy(), params["w_out"].numpy(), readout.spec.to_dict(), params["b_out"].numpy())
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("surrogate, scaling", [("triangle", "new"), ("fast_sigmoid", "new"), ("triangle", "old")])
def test_models_lif_step_is_the_lif_step_and_psi(surrogate, scaling):
    """``procs.models.lif_step`` (the Lava neuron's float dynamics, with the constants network.py passes from the
    exported spec) against :class:`LIF`: decay, input scaling, reset, refractory counter and ψ."""
    lif_step = compiled(MODELS, "lif_step", np=np)
    cell = LIF(n_in=3, n_rec=5, v_th=0.3, n_ref=2, surrogate=surrogate, input_scaling=scaling, dt_ms=1.0)
    g = torch.Generator().manual_seed(2)
    w_in = torch.randn(5, 3, generator=g, dtype=torch.float64) * (2.0 if scaling == "old" else 0.5)
    w_rec = torch.randn(5, 5, generator=g, dtype=torch.float64) * 0.2 * (1 - torch.eye(5, dtype=torch.float64))
    params = {"w_in": w_in, "w_rec": w_rec}
    x = (torch.rand(60, 3, generator=g) < 0.4).double()
    torch_state = cell.init_state(1, torch.float64)
    lava_state = SimpleNamespace(v=np.zeros(5), ref=np.zeros(5, int), z=np.zeros(5, int))
    constants = cell.spec.to_dict()
    spikes = refractory = 0
    for t in range(x.shape[0]):
        current = w_in.numpy() @ x[t].numpy() + w_rec.numpy() @ lava_state.z
        z, psi = lif_step(lava_state, current, constants)
        torch_state, torch_z = cell.step(params, torch_state, x[t : t + 1])
        np.testing.assert_array_equal(z, torch_z[0].numpy().astype(bool), err_msg=f"step {t}")
        np.testing.assert_allclose(lava_state.v, torch_state.v[0].numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(psi, cell.psi(params, torch_state)[0].numpy(), rtol=1e-12, atol=1e-12)
        spikes, refractory = spikes + int(z.sum()), refractory + int((lava_state.ref > 0).sum())
    assert spikes > 5 and refractory > 5  # the comparison saw spikes, resets and refractory steps


def test_models_alif_step_is_the_alif_step_and_psi():
    """``procs.models.alif_step`` (the Lava error module's ALIF, with the constants ``network._module_constants``
    passes from the exported spec) against :class:`ALIF`: adaptation, threshold, reset, refractoriness and ψ."""
    lif_step = compiled(MODELS, "lif_step", np=np)
    beta_vector = compiled(MODELS, "beta_vector", np=np)
    alif_step = compiled(MODELS, "alif_step", np=np, lif_step=lif_step, beta_vector=beta_vector)
    cell = ALIF(n_in=3, n_rec=6, v_th=0.3, n_ref=2, tau_a=40.0, beta=0.8, n_adaptive=4, dt_ms=1.0)
    g = torch.Generator().manual_seed(5)
    off_diagonal = 1 - torch.eye(6, dtype=torch.float64)
    params = {"w_in": torch.randn(6, 3, generator=g, dtype=torch.float64),
              "w_rec": torch.randn(6, 6, generator=g, dtype=torch.float64) * 0.2 * off_diagonal}
    x = (torch.rand(80, 3, generator=g) < 0.4).double()
    torch_state = cell.init_state(1, torch.float64)
    lava_state = SimpleNamespace(v=np.zeros(6), a=np.zeros(6), ref=np.zeros(6, int), z=np.zeros(6, int))
    constants = cell.spec.to_dict()
    spikes = 0
    for t in range(x.shape[0]):
        current = params["w_in"].numpy() @ x[t].numpy() + params["w_rec"].numpy() @ lava_state.z
        z, psi = alif_step(lava_state, current, constants)
        torch_state, torch_z = cell.step(params, torch_state, x[t : t + 1])
        np.testing.assert_array_equal(z, torch_z[0].numpy().astype(bool), err_msg=f"step {t}")
        np.testing.assert_allclose(lava_state.a, torch_state.a[0].numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(lava_state.v, torch_state.v[0].numpy(), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(psi, cell.psi(params, torch_state)[0].numpy(), rtol=1e-12, atol=1e-12)
        spikes += int(z.sum())
    assert spikes > 5 and lava_state.a[-1] > 0 and lava_state.a[0] > 0  # adapting and plain neurons spiked


def test_network_quantize_register_is_the_weight_quantiser():
    w = torch.randn(7, 9, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    for exp in (-8, -6):  # the second saturates the mantissa
        expected = quantize_weights(w, LOIHI, exp).numpy()
        np.testing.assert_array_equal(_quantize_register(w.numpy(), exp), expected)


def test_report_fidelity_numbers_are_the_torch_side_ones():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(30, generator=g, dtype=torch.float64), torch.randn(30, generator=g, dtype=torch.float64)
    b = b + a
    assert report.correlation(a.numpy(), b.numpy()) == pytest.approx(fidelity.correlation(a, b), rel=1e-12)
    assert report.relative_error(a.numpy(), b.numpy()) == pytest.approx(fidelity.relative_error(a, b), rel=1e-12)


# --- an export the torch side writes is what the Lava reader accepts ------------------------------------------
@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    root = tmp_path_factory.mktemp("lava_mirrors")
    assert main(["train", "experiment=tiny", "optim.n_iterations=1", f"run.dir={root / 'run'}", *QUIET]) == 0
    assert main(["export", str(root / "run"), "--target", "lava", "--out", str(root / "export"), "--tasks", "1",
                 "--calibration-tasks", "1"]) == 0
    return root / "export"


def test_a_fixed_point_lava_export_loads_in_the_lava_reader(tiny_export):
    """Format name and version, file names, weight, demonstration and fixed-point array keys, the neuron
    conventions, presynaptic signals and number-format keys: ``artefacts.load`` checks them all."""
    art = artefacts.load(tiny_export)
    assert art.is_fixed
    assert art.neurons["reset"] == artefacts.RESET and art.neurons["refractory"] == artefacts.REFRACTORY
    assert art.rule.post_factor.name in compared_with(ARTEFACTS, "name")
    assert art.rule == load_rule(tiny_export)[0]  # one schema: the Lava reader's records are the torch side's
    # the arrays network.py and run.py use only where present: a rename would silently fall back
    wanted = optional_arrays(NETWORK) | optional_arrays(RUN)
    assert wanted and wanted <= set(art.demos), wanted - set(art.demos)
    assert set(artefacts.FIXED_KEYS) <= set(art.demos) and set(artefacts.WEIGHT_KEYS) <= set(art.weights)


def test_the_lava_reader_refuses_a_malformed_rule_in_one_line_naming_the_key(tiny_export, tmp_path):
    """The shared records' checks reach the Lava program as its own one-line error (it exits 2 on them)."""
    bad = tmp_path / "bad"
    shutil.copytree(tiny_export, bad)
    record = json.loads((bad / "rule.json").read_text())
    del record["plastic"][1]["trace"]["decay"]
    (bad / "rule.json").write_text(json.dumps(record))
    manifest = json.loads((bad / "manifest.json").read_text())
    manifest["files"]["rule.json"] = hashlib.sha256((bad / "rule.json").read_bytes()).hexdigest()
    (bad / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(artefacts.ArtefactError, match=r"^rule\.json: plastic\[1\]\.trace\.decay: missing$"):
        artefacts.load(bad)


def test_an_arm_export_names_its_plant_and_one_without_plant_json_reads_as_the_arm(tiny_export, tmp_path):
    """The torch side writes the arm's plant record; an export written before plant.json existed (the same files
    without it) is read by the Lava side as that same arm, at the readout's step."""
    art = artefacts.load(tiny_export)
    assert art.plant == plant_record(make_task_family("arm_sines", n_steps=100, dt_ms=1.0)) == plants.legacy_arm(1e-3)
    old = tmp_path / "old"
    shutil.copytree(tiny_export, old)
    (old / "plant.json").unlink()
    manifest = json.loads((old / "manifest.json").read_text())
    del manifest["files"]["plant.json"]
    (old / "manifest.json").write_text(json.dumps(manifest))
    legacy = artefacts.load(old)
    assert legacy.plant == art.plant and legacy.metric == "mse_cart"
