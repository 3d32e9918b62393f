"""``eprop-l2l export RUN_OR_CHECKPOINT --target rule|nir|lava --out DIR``: the artefacts of a trained model for
hardware, a manifest and the fidelity report.

Everything is written into a temporary sibling of ``--out`` and renamed into place only when complete, so a
failed export leaves nothing behind (and ``--force`` replaces an existing export only after the new one is
complete). Arrays are ``.npz`` (never pickles); every file is listed with its SHA-256 in ``manifest.json``.

Targets:

* ``rule``: ``rule.json`` + ``weights.npz`` (the inner loop as data, :mod:`.rule`), ``plant.json`` (the plant
  that scores the movements, :mod:`.plant`), ``demonstrations.npz`` (held-out demonstrations with the PyTorch
  reference results), ``fidelity.json``;
* ``lava``: the same files, which the Lava program (:mod:`eprop_l2l.hardware.lava`) reads; with
  ``--precision loihi`` the rule's number format is the calibrated learning-engine format, with
  ``--precision loihi_split`` the same with ψL split over two third factors (y2 + 2⁻⁸·y3);
* ``nir``: ``learner.nir`` and ``error_module.nir`` (:mod:`.nir_export`) and their agreement with our
  simulation.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from ..inner_loop.fixed_point import LOIHI_SPLIT, number_format
from ..meta.params import ERROR_MODULE, NETWORK, flat, tree_map
from ..outputs import OutputError, check_output_dir
from .description import FORMAT_VERSION, PLANT_FILE, PLANT_METRICS, ExportError, NumberFormat
from .plant import plant_record
from .reader import DEMONSTRATIONS, MANIFEST, sha256_file, verify_manifest
from .rule import describe, learner_neurons, load_rule, save_rule

TARGETS = ("rule", "nir", "lava")
# what an export is written in: float or the learning engine's formats (fixed_point.PRECISIONS also has "wide",
# a format so wide that it equals float: the fidelity report's self-check, not something to put on a chip)
PRECISIONS = ("float", "loihi", "loihi_split")
FIDELITY = "fidelity.json"
# the fidelity report's fixed-point entries and how the export's README names them
REPORTED = {"wide": "wide fixed point", "loihi": "loihi fixed point",
            "loihi_split": "loihi fixed point, ψL split over y2 + 2⁻⁸·y3",
            "module_wide": "error module at wide fixed point (rule float)",
            "module_loihi": "error module at Loihi precision (rule float)",
            "loihi_module": "error module and rule at Loihi precision",
            "loihi_split_module": "error module and rule at Loihi precision, ψL split"}
MAX_TASKS = 1000


def is_export(path: Path) -> bool:
    """Whether ``path`` holds an earlier export (its manifest says so): what ``--force`` may replace."""
    try:
        return json.loads((path / MANIFEST).read_text()).get("format") == "eprop-l2l-export"
    except (OSError, ValueError, AttributeError):
        return False


def check_out(out: Path, force: bool) -> None:
    """``--out`` by the output policy (:mod:`eprop_l2l.outputs`): new or empty, never a run directory, inside
    or over one; ``--force`` replaces only an earlier export."""
    try:
        check_output_dir(out, "--out", force, previous=is_export)
    except OutputError as err:
        raise ExportError(err.key, err.problem) from None


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("eprop_l2l")
    except PackageNotFoundError:
        return "source checkout"


def _numpy(value) -> np.ndarray:
    array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)
    return array.astype(np.float32) if array.dtype == np.float64 else array


def _demonstrations(batch, arrays: dict) -> dict:
    out = {"x": batch.inputs, "context": batch.context, "omega_target": batch.targets, "mask": batch.mask,
           "hand_target": batch.extra["hand"], **arrays}
    out = {k: _numpy(v) for k, v in out.items()}
    for key in ("z_demo", "q_z_demo", "z_test"):
        out[key] = out[key].astype(np.uint8)
    return out


def engine_format(rule, fmt, scales, seed: int = 0, error_module: dict | None = None) -> NumberFormat:
    """The rule's number format at learning-engine precision: widths, rounding and the calibrated exponents,
    also spelled out as the engine's constants (trace impulse, third-factor scale, update shift); and, for a
    learned error module, its format at the chip's precision (``error_module``: :func:`.fixed_module.module_record`)."""
    written = fmt.to_dict()
    engine = {**{k: v for k, v in written.items() if k != "kind"}, "seed": seed, "scales": scales.to_dict(),
              "weight_exp": dict(scales.weight_exp), "trace_impulse": {n: 2 ** i for n, i in scales.trace_exp.items()},
              "y_scale": scales.y_scale(rule.inner_lr, learner_neurons(rule).input_scale),
              "product_exp": dict(scales.product_exp), "dw_shift": dict(scales.update_exp)}
    if error_module is not None:
        engine["error_module"] = error_module
    return NumberFormat(kind=written["kind"], engine=engine)


def module_formats(rule) -> dict:
    """The fidelity report's entries with the error module at a chip's precision (:mod:`.fixed_module`): wide
    (must equal float), Loihi's with the rule in float, and with the rule at Loihi's formats (one 8-bit third
    factor, and ψL split over two); none for e-prop 1 or an ALIF module."""
    from .fixed_module import LOIHI_MODULE, WIDE_MODULE, emulated

    if not emulated(rule):
        return {}
    loihi = number_format("loihi")
    return {"module_wide": (WIDE_MODULE, None), "module_loihi": (LOIHI_MODULE, None),
            "loihi_module": (LOIHI_MODULE, loihi), "loihi_split_module": (LOIHI_MODULE, LOIHI_SPLIT)}


def file_weights(meta: dict) -> dict:
    """The meta-parameter tree by the names the export's files use (``weights.npz``, read by the Lava side:
    ``w_in``, ``w_rec``, ``w_out``, ``em_w_in``, ``em_w_rec``, ``em_proj``, ...): its flat names
    (``meta.params.flat``). The rule description is built from them."""
    return flat(meta)


def _rule_artefacts(directory: Path, learner, meta, family, cfg, args) -> dict:
    from .fidelity import calibrate_rule, measure

    rule, weights = describe(learner, file_weights(meta))
    held_out = family.sample(args.tasks, torch.Generator().manual_seed(cfg.eval.seed))
    calibration = family.sample(args.calibration_tasks, torch.Generator().manual_seed(cfg.optim.validation_seed))
    if args.precision in ("loihi", "loihi_split"):
        from .fixed_module import emulated, module_record

        fmt = LOIHI_SPLIT if args.precision == "loihi_split" else number_format("loihi")
        scales = calibrate_rule(rule, weights, calibration, fmt)
        module = module_record(rule, weights) if emulated(rule) else None
        rule = dataclasses.replace(rule, number_format=engine_format(rule, fmt, scales, error_module=module))
    save_rule(directory, rule, weights)
    loaded_rule, loaded_weights = load_rule(directory)  # the fidelity is measured on what was written
    if loaded_rule != rule:
        raise ExportError("export", "the written rule description does not read back identically")
    formats = {"wide": number_format("wide"), "loihi": number_format("loihi"), "loihi_split": LOIHI_SPLIT}
    # the Lava program compares its fixed-point run with the emulation of the format the export holds
    engine = "loihi_split" if args.precision == "loihi_split" else "loihi"
    report, arrays = measure(loaded_rule, loaded_weights, held_out, calibration, formats, learner, meta,
                             family=family, module_formats=module_formats(loaded_rule), engine=engine)
    np.savez(directory / DEMONSTRATIONS, **_demonstrations(held_out, arrays))
    (directory / PLANT_FILE).write_text(json.dumps(plant_record(family).to_dict(), indent=2) + "\n")
    return report


def _nir_artefacts(directory: Path, learner, meta, family, cfg, args) -> dict:
    """``network.nir`` and ``error_module.nir`` (the meta-learned initial networks) and how closely a third-party
    NIR reader reproduces them on held-out demonstrations, as exported and with the semantics NIR can express."""
    from ..error_modules.base import Observation
    from .nir_export import export_learner_nir, nir_fidelity

    held_out = family.sample(args.tasks, torch.Generator().manual_seed(cfg.eval.seed))
    paths = export_learner_nir(learner, meta, directory)
    with torch.no_grad():
        trajectory, _ = learner.network.run(meta[NETWORK], held_out.inputs)
        obs = Observation(spikes=trajectory.outputs, inputs=held_out.inputs, context=held_out.context)
        report = {"files": sorted(p.name for p in paths.values()),
                  "network": nir_fidelity(learner.network, meta[NETWORK], held_out.inputs)}
        if "error_module" in paths:
            report["error_module"] = nir_fidelity(learner.error_module, meta[ERROR_MODULE],
                                                  learner.error_module.module_input(obs), literal=False)
    return report


def _readme(target: str, source: dict, report: dict, metric: str) -> str:
    label = PLANT_METRICS[metric]
    lines = [f"# eprop-l2l export ({target})", "",
             f"From `{source['checkpoint']}` (iteration {source['iteration']}), exported {source['exported_at']}.",
             "Files are listed with their SHA-256 in `manifest.json`; numbers below are in `fidelity.json`.", ""]
    if "loaded_rule_vs_eprop_online" in report:
        lines += ["| check | value |", "|---|---|"]
        for name, value in report["loaded_rule_vs_eprop_online"].items():
            lines.append(f"| loaded rule vs eprop_online, {name}, relative error | {value:.2e} |")
        lines.append(f"| one-shot {label} before → after (float) | {report['float'][f'{metric}_before']:.4f} → "
                     f"{report['float'][f'{metric}_after']:.4f} |")
        for fmt in [k for k in REPORTED if k in report]:
            entry = report[fmt]
            for name in ("w_in", "w_rec"):
                if name in entry:
                    lines.append(f"| {REPORTED[fmt]}, {name}: ΔW correlation with float | "
                                 f"{entry[name]['dw_correlation']:.4f} |")
            lines.append(f"| {REPORTED[fmt]}: {label} after / float | {entry[f'{metric}_ratio_to_float']:.3f} |")
    else:
        lines += ["```", json.dumps(report, indent=2), "```"]
    return "\n".join(lines) + "\n"


def check_request(kind: str, out: str, force: bool = False, tasks: int = 10, calibration_tasks: int = 10,
                  precision: str | None = None) -> tuple[Path, str]:
    """The export directory and the precision of a request, every value checked before anything is computed
    (one-line errors naming the option)."""
    if kind not in TARGETS:
        raise ExportError("--target", f"unknown target {kind!r} (choose from {', '.join(TARGETS)})")
    precision = precision or ("loihi" if kind == "lava" else "float")
    if precision not in PRECISIONS:
        raise ExportError("--precision", f"unknown precision {precision!r} (choose from {', '.join(PRECISIONS)})")
    for key, value in (("--tasks", tasks), ("--calibration-tasks", calibration_tasks)):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TASKS:
            raise ExportError(key, f"must be an integer in [1, {MAX_TASKS}], got {value!r}")
    out_dir = Path(out)
    check_out(out_dir, force)
    return out_dir, precision


def write_export(out_dir: Path, kind: str, precision: str, learner, meta: dict, family, cfg, source: dict,
                 tasks: int = 10, calibration_tasks: int = 10) -> Path:
    """Write the export of a trained model (a request passed by :func:`check_request`), staged and renamed
    into ``out_dir``; ``source`` names where the model came from (checkpoint, iteration, experiment)."""
    from types import SimpleNamespace

    plant_record(family)  # the demonstrations are scored on the family's plant: refuses one without, before compute
    if kind != "nir" and getattr(learner, "device", None) is not None:  # the rule would lose the device model
        raise ExportError("device.kind", f"{cfg.device.kind}: the exported rule runs in float or in the learning "
                          "engine's formats, and the PCM device model (noise, drift, 1/16 writes) has no artefact; "
                          "export a run trained with device.kind=none")
    meta = tree_map(lambda v: v.detach().cpu(), meta)
    if kind == "nir":
        from .nir_export import NIRLossWarning, learner_to_nir

        with warnings.catch_warnings():  # what is lost is measured and reported, not warned about
            warnings.simplefilter("ignore", NIRLossWarning)
            learner_to_nir(learner, meta)  # refuses what NIR cannot express, before any file is written
    else:
        describe(learner, file_weights(meta))  # refuses what the rule cannot express, before any computation
    args = SimpleNamespace(tasks=tasks, calibration_tasks=calibration_tasks, precision=precision)
    source = {**source, "exported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "eprop_l2l_version": _version()}
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.resolve().parent))
    try:
        writer = _nir_artefacts if kind == "nir" else _rule_artefacts
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # NIR's losses are measured in the report
            report = writer(staging, learner, meta, family, cfg, args)
        (staging / FIDELITY).write_text(json.dumps(report, indent=2))
        (staging / "README.md").write_text(_readme(kind, source, report, family.primary_metric))
        files = {p.name: sha256_file(p) for p in sorted(staging.iterdir()) if p.is_file()}
        manifest = {"format": "eprop-l2l-export", "format_version": FORMAT_VERSION, "target": kind,
                    "precision": precision if kind != "nir" else None, "source": source, "files": files,
                    "fidelity": report}
        (staging / MANIFEST).write_text(json.dumps(manifest, indent=2))
        _replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out_dir


def _replace(staging: Path, out_dir: Path) -> None:
    """Move the complete export into place; an existing one (``--force``) is removed only afterwards."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        os.replace(out_dir, old)
    os.replace(staging, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def verify(directory: str | Path) -> dict:
    """The manifest of an export directory, after checking every listed file's SHA-256 (and that no other file
    is there): the one artefact reader's (:func:`.reader.verify_manifest`)."""
    return verify_manifest(directory)
