"""Command line: ``eprop-l2l train | evaluate | bench | demo | export`` (thin: config in, library call out).

    eprop-l2l train experiment=cpu optim.n_iterations=2000 run.dir=runs/arm_cpu
    eprop-l2l train -m experiment=tiny optim.lr=1e-3,3e-3          # multirun: one run per combination
    eprop-l2l evaluate runs/arm_cpu                                  # one-shot evaluation of the latest checkpoint
    eprop-l2l evaluate runs/arm_cpu inner.n_updates=0                # ablation: no inner update
    torchrun --nproc_per_node 2 -m eprop_l2l.cli train experiment=cpu   # data-parallel meta-training

Bad input (unknown key, wrong type, impossible value, unusable checkpoint) prints one line naming the key and
exits with code 2 before any computation.
"""

from __future__ import annotations

import argparse
import runpy
import sys
from pathlib import Path

COMMANDS = {
    "train": "meta-train a learning network and error module (Hydra overrides, -m for sweeps)",
    "evaluate": "one-shot evaluation of a run directory or checkpoint on held-out tasks",
    "bench": "run a benchmark script from benchmarks/ (source checkout)",
    "demo": "e-prop 1 pattern-generation demo (no meta-learning)",
    "export": "export a trained model's inner-loop rule (rule | lava) or its networks (nir), with a fidelity report",
}
BENCHMARKS = {"meta": "bench_meta_iteration.py", "trial": "bench_eprop_trial.py",
              "distributed": "bench_distributed.py"}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``eprop-l2l: <problem>``) and exit code 2, like every other bad input."""

    def error(self, message: str):
        self.exit(2, f"eprop-l2l: {message.splitlines()[0]} (see eprop-l2l {self.prog.split()[-1]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eprop-l2l", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == "train":
            command.add_argument("-m", "--multirun", action="store_true", help="expand sweeps (a=1,2) into runs")
            command.add_argument("--cfg", action="store_true", help="print the composed configuration and exit")
            command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=tiny optim.lr=1e-3")
        elif name == "evaluate":
            command.add_argument("target", help="run directory (latest checkpoint) or checkpoint file")
            command.add_argument("overrides", nargs="*", help="changes to the stored config, e.g. eval.n_tasks=200")
        elif name == "bench":
            command.add_argument("which", choices=tuple(BENCHMARKS))
            command.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark script")
        elif name == "export":
            command.add_argument("source", help="run directory (latest checkpoint) or checkpoint file")
            command.add_argument("--target", required=True, help="rule | nir | lava")
            command.add_argument("--out", required=True, help="export directory (new or empty)")
            command.add_argument("--force", action="store_true", help="replace a non-empty --out")
            command.add_argument("--tasks", type=int, default=10, help="held-out demonstrations in the fidelity report")
            command.add_argument("--calibration-tasks", type=int, default=10,
                                 help="demonstrations (validation stream) that calibrate fixed-point scales")
            command.add_argument("--precision", default=None,
                                 help="number format of the exported rule: float | loihi (default: loihi for lava)")
        elif name == "demo":
            command.add_argument("--out", default="runs/demo_eprop1", help="run directory")
            command.add_argument("--feedback", default="random", choices=("random", "symmetric", "adaptive"))
            command.add_argument("--iterations", type=int, default=150)
            command.add_argument("--seed", type=int, default=0)
    return parser


def _train(args) -> int:
    from .runs import commands
    from .runs.compose import expand_sweep, load_config, to_yaml

    jobs = expand_sweep(args.overrides) if args.multirun else [list(args.overrides)]
    configs = [load_config(job) for job in jobs]  # every job validated before any computation
    if args.cfg:
        print("\n---\n".join(to_yaml(c) for c in configs), end="")
        return 0
    if len(configs) == 1:
        return commands.train(configs[0])
    import dataclasses
    import time

    base = Path(configs[0].run.dir or f"runs/multirun/{time.strftime('%Y%m%d-%H%M%S')}")
    code = 0
    for index, (job, cfg) in enumerate(zip(jobs, configs, strict=True)):
        run_dir = base / f"{index}_{commands.evaluation_name([o for o in job if not o.startswith('run.dir=')])}"
        print(f"[{index + 1}/{len(jobs)}] {' '.join(job)} → {run_dir}")
        code = max(code, commands.train(dataclasses.replace(cfg, run=dataclasses.replace(cfg.run,
                                                                                       dir=str(run_dir)))))
    return code


def _bench(args) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / BENCHMARKS[args.which]
    if not script.exists():
        return _fail(f"bench: {script} not found (benchmarks live in the source checkout)")
    sys.argv = [str(script), *args.args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


def _export(args) -> int:
    from .hardware.export import export

    out = export(args.source, args.out, args.target, args.force, args.tasks, args.calibration_tasks, args.precision)
    print(f"export ({args.target}) written to {out}: {', '.join(sorted(p.name for p in out.iterdir()))}")
    print((out / "README.md").read_text(), end="")
    return 0


def _fail(message: str, code: int = 2) -> int:
    print(f"eprop-l2l: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # usage errors (one line, see _Parser) and --help: an exit code, not an exception
        return stop.code if isinstance(stop.code, int) else 0
    from .errors import ConfigError
    from .meta.trainer import NonFiniteError
    from .runs.checkpoint import CheckpointError

    try:
        if args.command == "train":
            return _train(args)
        if args.command == "evaluate":
            from .runs.commands import evaluate

            return evaluate(args.target, args.overrides)
        if args.command == "bench":
            return _bench(args)
        if args.command == "demo":
            from . import demo

            if args.iterations < 1:
                raise ConfigError("--iterations", f"must be >= 1, got {args.iterations}")
            return demo.main(args.out, args.feedback, args.iterations, args.seed)
        return _export(args)
    except (ConfigError, CheckpointError) as err:
        return _fail(str(err))
    except NonFiniteError as err:
        return _fail(str(err), 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())
