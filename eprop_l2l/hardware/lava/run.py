"""The Lava program: ``python -m eprop_l2l.hardware.lava.run DIR [--tasks N] [--precision float|fixed] [--out OUT]``.

Runs in ``.venv-lava`` (CPython 3.10, lava-nc 0.10.0, numpy; no torch). For each exported held-out movement it
builds the learning network in Lava (:mod:`.network`), runs the demonstration with the e-prop rule on the
learning engine (learning signal replayed from the export), applies the update once, runs the test trial with the
updated weights, and compares with the exported PyTorch references (:mod:`.report`). Writes into OUT
(default ``DIR/lava_<precision>``): ``lava_results.npz``, ``lava_report.json``, ``lava_report.txt`` and, when
matplotlib is importable, ``lava_hand_paths.png``. Bad input: one line on stderr, exit 2, nothing written.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ...outputs import OutputError, check_output_dir
from . import plants
from . import report as rep
from .artefacts import ArtefactError, fixed_module_format, load

PROG = "eprop-l2l lava"
EXIT_BAD_INPUT = 2
EXIT_HUNG = 3


class BadInput(Exception):
    pass


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="an export directory written by `eprop-l2l export ... --target lava`")
    parser.add_argument("--tasks", type=int, default=None, help="run the first N exported movements (default: all)")
    parser.add_argument("--precision", default="float", help="float | fixed: Lava's floating-point models, or the "
                        "fixed-point models at the export's learning-engine formats")
    parser.add_argument("--signal", default="replay", help="replay | module: the exported learning signal L^t "
                        "drives the third factor (default), or the error module runs in Lava too (float only)")
    parser.add_argument("--pairing", default=None, help="compensated | shadow: how the presynaptic trace is paired "
                        "with ψ^t (default: compensated with replay, shadow with module; docs/lava.md)")
    parser.add_argument("--out", default=None, help="report directory (default: DIR/lava_<precision>)")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds one task may take before the run is "
                        "declared hung and its Lava processes are ended (default 1800)")
    parser.add_argument("--no-figure", action="store_true", help="do not draw lava_hand_paths.png")
    parser.add_argument("--force", action="store_true", help="replace an earlier report in --out (nothing else)")
    return parser.parse_args(argv)


def _inside_fork_callback(frame) -> bool:
    """Whether the signal interrupted an at-fork callback (Lava forks its runtime processes; logging and threading
    register such callbacks): an exception raised there is swallowed by ``os.fork`` and printed as "Exception
    ignored", so the exit must wait until the fork has returned."""
    innermost = frame
    while frame is not None:
        code = frame.f_code
        if "fork" in code.co_name or "fork" in Path(code.co_filename).name:
            return True
        frame = frame.f_back
    # logging's and threading's own at-fork callbacks (their lock handling) are called straight from os.fork
    return innermost is not None and Path(innermost.f_code.co_filename).parent.name in ("logging", "threading") \
        or (innermost is not None and Path(innermost.f_code.co_filename).name == "threading.py")


def _exit_on_terminate(signum, frame) -> None:
    if _inside_fork_callback(frame):
        threading.Timer(0.05, signal.raise_signal, (signum,)).start()  # again, once the fork has returned
        return
    sys.exit(143)


def _kill_children() -> None:
    """End this program's own Lava runtime processes (by pid: they are our children) and reap them."""
    children = multiprocessing.active_children()
    for child in children:
        try:
            os.kill(child.pid, signal.SIGKILL)
        except (OSError, TypeError):
            pass
    deadline = time.monotonic() + 10
    for child in children:
        while time.monotonic() < deadline:
            try:
                if os.waitpid(child.pid, os.WNOHANG)[0] != 0:
                    break
            except (ChildProcessError, OSError, TypeError):
                break
            time.sleep(0.05)


class Watchdog:
    """A Lava model that raises leaves the runtime waiting forever: after ``seconds`` this ends our Lava
    processes and the program (exit 3) with one line on stderr."""

    def __init__(self, seconds: float, what: str):
        self.seconds, self.what = seconds, what
        self.timer = threading.Timer(seconds, self._fire)
        self.timer.daemon = True

    def _fire(self) -> None:
        try:
            print(f"{PROG}: {self.what} did not finish within {self.seconds:g} s (a Lava process failed or hung; "
                  "see any traceback above); its Lava processes were ended", file=sys.stderr, flush=True)
            _kill_children()
        finally:
            os._exit(EXIT_HUNG)

    def __enter__(self):
        self.timer.start()
        return self

    def __exit__(self, *exc):
        self.timer.cancel()
        return False


def _check(args: argparse.Namespace):
    directory = Path(args.directory)
    if not directory.is_dir():
        raise BadInput(f"{directory}: no such export directory")
    if args.precision not in ("float", "fixed"):
        raise BadInput(f"--precision: {args.precision!r} (choose float or fixed)")
    try:
        art = load(directory)
    except ArtefactError as err:
        raise BadInput(str(err)) from None
    k = art.n_tasks
    n_tasks = k if args.tasks is None else args.tasks
    if not 1 <= n_tasks <= k:
        raise BadInput(f"--tasks: {args.tasks} (the export holds {k} movements)")
    if args.precision == "fixed" and not art.is_fixed:
        raise BadInput(f"{directory}: the export has no fixed-point number format (export with --precision loihi) "
                       "for --precision fixed")
    if args.precision == "fixed" and art.rule.adaptation is not None:
        raise BadInput("--precision fixed: an ALIF learner's per-synapse ε_a runs on Lava's floating-point models "
                       "only (the export's fidelity report holds its fixed-point emulation)")
    if args.signal not in ("replay", "module"):
        raise BadInput(f"--signal: {args.signal!r} (choose replay or module)")
    if args.pairing not in (None, "compensated", "shadow"):
        raise BadInput(f"--pairing: {args.pairing!r} (choose compensated or shadow)")
    if args.signal == "module" and args.pairing == "compensated":
        raise BadInput("--signal module: the error module in Lava runs with the shadow pairing")
    if args.signal == "module" and args.precision == "fixed":
        try:  # the module's fixed-point format, or one line saying why there is none
            fixed_module_format(art)
        except ArtefactError as err:
            raise BadInput(str(err)) from None
    if not (args.timeout > 0 and args.timeout != float("inf")):  # inf would disarm the watchdog
        raise BadInput(f"--timeout: {args.timeout} (must be a finite number of seconds > 0)")
    out = Path(args.out) if args.out else directory / f"lava_{args.precision}"
    try:  # the output policy, before any compute: new or empty, never a run directory, writable
        check_output_dir(out, "--out", args.force, previous=lambda p: (p / "lava_report.json").is_file())
    except OutputError as err:
        raise BadInput(str(err)) from None
    return art, n_tasks, out


def _task_report(art, k: int, res, precision: str) -> tuple[dict, dict]:
    d, w = art.demos, art.weights
    eta = float(art.rule.inner_lr)
    plant, metric = art.plant, art.metric
    y = rep.readout(res.z_test, w["w_out"], art.readout, w.get("b_out"))
    hand = plants.path(plant, y)
    hand_pt = plants.path(plant, d["y_test"][k])
    replayed = "q_signals" if precision == "fixed" and "q_signals" in d else "signals"
    emulation = d.get(f"q_{metric}_after")
    entry = {"task": k, "seconds": res.seconds,
             "spikes_demo": rep.spike_agreement(res.z_demo, d["z_demo"][k]),
             "spikes_test": rep.spike_agreement(res.z_test, d["z_test"][k]),
             f"{metric}_lava": float(plants.score(plant, hand, d["hand_target"][k])),
             f"{metric}_pytorch": float(d[f"{metric}_after"][k]),
             f"{metric}_emulation": float(emulation[k]) if emulation is not None else None,
             "y_test_relative_error": rep.relative_error(y, d["y_test"][k]),
             "signal_relative_error": rep.relative_error(res.signal, d[replayed][k]),
             "replayed_signal": replayed,
             "vs_pytorch_float": {}}
    for name, key in (("w_in", "dw_in"), ("w_rec", "dw_rec")):
        estimate = -res.delta_w[name] / eta  # e-prop's Σ ψ L x̄ as Lava applied it
        ref = d[key][k]
        if name == "w_rec":
            estimate, ref = rep.off_diagonal(estimate), rep.off_diagonal(ref)
            entry["w_rec_diagonal_max_abs_dw"] = float(np.abs(np.diag(res.delta_w[name])).max())
        entry["vs_pytorch_float"][name] = {"correlation": rep.correlation(estimate, ref),
                                           "relative_error": rep.relative_error(estimate, ref)}
    if precision == "fixed":
        q = {}
        if "q_z_demo" in d:
            entry["spikes_demo_vs_emulation"] = rep.spike_agreement(res.z_demo, d["q_z_demo"][k])
        for name, short in (("w_in", "in"), ("w_rec", "rec")):
            tag, qtag = res.tag[name], d[f"q_tag_{short}"][k]
            after, qw = res.w_after[name], d[f"q_w_{short}"][k]
            before = res.w_before[name]
            if name == "w_rec":
                tag, qtag = rep.off_diagonal(tag), rep.off_diagonal(qtag)
                after, qw, before = rep.off_diagonal(after), rep.off_diagonal(qw), rep.off_diagonal(before)
            q[f"tag_{name}"] = {"correlation": rep.correlation(tag, qtag),
                                "relative_error": rep.relative_error(tag, qtag),
                                "equal_fraction": float(np.mean(np.round(tag) == np.round(qtag)))}
            q[f"dw_{name}"] = {"correlation": rep.correlation(after - before, qw - before),
                               "relative_error": rep.relative_error(after - before, qw - before),
                               "equal_fraction": float(np.mean(np.round(after) == np.round(qw)))}
        entry["vs_fixed_emulation"] = q
    arrays = {"dw_in": res.delta_w["w_in"], "dw_rec": res.delta_w["w_rec"], "tag_in": res.tag["w_in"],
              "tag_rec": res.tag["w_rec"], "z_demo": res.z_demo, "z_test": res.z_test, "psi": res.psi, "y2": res.y2,
              "signal": res.signal,
              "y_test": y, "hand_test": hand, "hand_pytorch": hand_pt, "hand_target": d["hand_target"][k]}
    if precision == "fixed":
        arrays.update(w_in_register=res.w_after["w_in"], w_rec_register=res.w_after["w_rec"])
    return entry, arrays


def _write(out: Path, files: dict[str, bytes]) -> None:
    """Every file first into a staging folder next to ``out``, then moved into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        for name, payload in files.items():
            (staging / name).write_bytes(payload)
        out.mkdir(exist_ok=True)
        for name in files:
            os.replace(staging / name, out / name)
    finally:
        for leftover in staging.glob("*"):
            leftover.unlink()
        staging.rmdir()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        art, n_tasks, out = _check(args)
    except BadInput as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        import lava  # noqa: F401

        from .network import run_task
    except ImportError as err:
        print(f"{PROG}: lava-nc is not importable in {sys.executable} ({err}); `make lava-env` creates .venv-lava",
              file=sys.stderr)
        return EXIT_BAD_INPUT
    signal.signal(signal.SIGTERM, _exit_on_terminate)  # so that every runtime's `finally: stop()` runs
    entries, per_task = [], []
    start = time.perf_counter()
    workdir = tempfile.TemporaryDirectory(prefix="eprop-l2l-lava-")
    try:
        for k in range(n_tasks):
            with Watchdog(args.timeout, f"task {k}"):
                res = run_task(art, k, args.precision, workdir.name, args.signal, args.pairing)
            entry, arrays = _task_report(art, k, res, args.precision)
            entries.append(entry)
            per_task.append(arrays)
            print(f"task {k}: {res.seconds:.1f} s, spike agreement {entry['spikes_demo']['agreement']:.6f}, "
                  f"ΔW corr in/rec {entry['vs_pytorch_float']['w_in']['correlation']:.6f}/"
                  f"{entry['vs_pytorch_float']['w_rec']['correlation']:.6f}", flush=True)
    except ArtefactError as err:
        print(f"{PROG}: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    finally:
        _kill_children()
        workdir.cleanup()
    seconds = time.perf_counter() - start
    from importlib.metadata import version

    d, metric = art.demos, art.metric
    in_lava = "readout, output error and feedback B" if art.rule.is_feedback else "error module"
    report = {"format": "eprop-l2l-lava-report", "format_version": 1, "export": str(Path(args.directory).resolve()),
              "precision": args.precision, "lava_version": version("lava-nc"),
              "run_cfg": f"Loihi2SimCfg(select_tag={'fixed_pt' if args.precision == 'fixed' else 'floating_pt'!r})",
              "learning_signal": ("replayed (the exported L^t drives the neurons' third-factor input)"
                                  if args.signal == "replay" else
                                  f"{in_lava} in Lava (L^t reaches the learner 2 steps after psi^t; learning on "
                                  "shadow synapses 3 steps late)"),
              "pairing": args.pairing or ("shadow" if args.signal == "module" else "compensated"),
              "n_tasks": n_tasks, "n_steps": int(d["x"].shape[1]), "n_neurons": int(art.neurons["n"]),
              "plant": art.plant.kind, "metric": metric, "seconds": seconds, "tasks": entries}
    report["mean"] = {
        "spike_agreement_demo": float(np.mean([e["spikes_demo"]["agreement"] for e in entries])),
        "spike_agreement_test": float(np.mean([e["spikes_test"]["agreement"] for e in entries])),
        "spikes_identical_tasks": int(sum(e["spikes_demo"]["identical"] for e in entries)),
        "corr_w_in": float(np.mean([e["vs_pytorch_float"]["w_in"]["correlation"] for e in entries])),
        "corr_w_rec": float(np.mean([e["vs_pytorch_float"]["w_rec"]["correlation"] for e in entries])),
        "relerr_w_in": float(np.mean([e["vs_pytorch_float"]["w_in"]["relative_error"] for e in entries])),
        "relerr_w_rec": float(np.mean([e["vs_pytorch_float"]["w_rec"]["relative_error"] for e in entries])),
        f"{metric}_lava": float(np.mean([e[f"{metric}_lava"] for e in entries])),
        f"{metric}_pytorch": float(np.mean([e[f"{metric}_pytorch"] for e in entries])),
        "signal_relative_error": float(np.mean([e["signal_relative_error"] for e in entries])),
    }
    if args.precision == "fixed" and entries[0][f"{metric}_emulation"] is not None:
        report["mean"][f"{metric}_emulation"] = float(np.mean([e[f"{metric}_emulation"] for e in entries]))
    if args.precision == "fixed":
        for key in ("tag_w_in", "tag_w_rec", "dw_w_in", "dw_w_rec"):
            report["mean"][f"fixed_{key}_relative_error"] = float(
                np.mean([e["vs_fixed_emulation"][key]["relative_error"] for e in entries]))
    text = rep.table(report)
    stacked = {key: np.stack([a[key] for a in per_task]) for key in per_task[0]}
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **stacked)
    files = {"lava_results.npz": buffer.getvalue(), "lava_report.txt": (text + "\n").encode()}
    figure = None
    if not args.no_figure:
        with tempfile.TemporaryDirectory() as tmp:
            png = Path(tmp) / "lava_hand_paths.png"
            if rep.figure(png, stacked["hand_target"], stacked["hand_pytorch"], stacked["hand_test"],
                          f"hand paths after one Lava e-prop update ({args.precision})"):
                files[png.name] = png.read_bytes()
                figure = png.name
    report["figure"] = figure
    files["lava_report.json"] = json.dumps(report, indent=2).encode()
    _write(out, files)
    print(text)
    print(f"written to {out}: {', '.join(sorted(files))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
