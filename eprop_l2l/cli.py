"""Command line: ``eprop-l2l train | evaluate | plot | table | bench | demo-eprop1 | export`` (thin: config in, library
call out).

    eprop-l2l train experiment=cpu optim.n_iterations=2000 run.dir=runs/arm_cpu
    eprop-l2l train -m experiment=tiny optim.lr=1e-3,3e-3          # multirun: one run per combination
    eprop-l2l train -m experiment=cpu 'optim.seed=range(3)' hydra/launcher=joblib hydra.launcher.n_jobs=2
                                                                     # 3 seeds, 2 at a time (docs/sweeps.md)
    eprop-l2l train --help                                           # the presets and config groups
    eprop-l2l evaluate runs/arm_cpu                                  # → runs/arm_cpu/evaluations/as_trained-<hash>/
    eprop-l2l evaluate runs/arm_cpu inner.n_updates=0                # ablation: no inner update
    torchrun --nproc_per_node 2 -m eprop_l2l.cli train experiment=cpu   # data-parallel meta-training

Bad input (unknown key, wrong type, impossible value, unusable checkpoint) prints one line naming the key and
exits with code 2 before any computation.
"""

from __future__ import annotations

import argparse
import os
import sys

from .commands.bench import BENCHMARKS

# This module parses argv, dispatches to the entry function of each command (one module each in eprop_l2l.commands)
# and turns their errors into one stderr line and an exit code; its docstring is `eprop-l2l --help`'s text.

COMMANDS = {
    "train": "meta-train a learning network and error module (Hydra overrides, -m for sweeps)",
    "evaluate": "one-shot evaluation of a run directory or checkpoint on held-out tasks",
    "bench": "run a benchmark script from benchmarks/ (source checkout)",
    "plot": "training curves of a run (history.jsonl → PNG), or a multirun's summary table (Markdown, CSV)",
    "demo-eprop1": "e-prop 1 pattern-generation demo (no meta-learning; `make demo` is the e-prop 2 one)",
    "export": "export a trained model's inner-loop rule (rule | lava) or its networks (nir), with a fidelity report",
    "hardware": "run an export on a neuromorphic back-end: `hardware run DIR` (Lava, its own Python 3.10 env)",
    "table": "the one-shot comparison table of several methods from their evaluation directories (paired "
             "statistics on the same movements; Markdown, CSV)",
    "compare": "every learning rule (bptt, tbptt, e-prop 1/3, rflo, rtrl, snap2, ostl) on one task and cell: table "
               "and curves",
}


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line (``eprop-l2l: <problem>``) and exit code 2, like every other bad input."""

    def error(self, message: str):
        from .messages import one_line

        self.exit(2, f"eprop-l2l: {one_line(message.splitlines()[0] if message else message)} "
                     f"(see eprop-l2l {self.prog.split()[-1]} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eprop-l2l", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import __version__

    parser.add_argument("--version", action="version", version=f"eprop-l2l {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        extra = {}
        if name == "train":
            from .config.catalog import describe

            extra = {"epilog": describe(), "formatter_class": argparse.RawDescriptionHelpFormatter}
        command = sub.add_parser(name, help=help_text, description=help_text, **extra)
        if name == "train":
            command.add_argument("-m", "--multirun", action="store_true",
                                 help="expand sweeps (a=1,2) into runs, run by hydra/launcher=basic|joblib|"
                                 "submitit_local|submitit_slurm (docs/sweeps.md)")
            command.add_argument("--cfg", action="store_true", help="print the composed configuration and exit")
            command.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. experiment=tiny optim.lr=1e-3")
        elif name == "evaluate":
            command.add_argument("target", help="run directory (latest checkpoint) or checkpoint file")
            command.add_argument("overrides", nargs="*", help="changes to the stored config, e.g. eval.n_tasks=200")
            command.add_argument("--out", default=None, help="evaluation directory (new or empty; default "
                                 "TARGET/evaluations/<overrides>-<hash>/, never over existing results)")
        elif name == "plot":
            command.add_argument("run", help="run directory (training curves) or multirun directory (summary)")
            command.add_argument("--out", default=None, help="output file or directory (default: inside RUN)")
        elif name == "table":
            command.add_argument("rows", nargs="+", help="LABEL=DIR[,DIR...]: one evaluation directory (metrics.json "
                                 "+ per_task.json) per training seed and movement set")
            command.add_argument("--reference", default=None, help="the row the others are paired with (default: "
                                 "the first)")
            command.add_argument("--metric", default="mse_cart_after", help="per-movement error (per_task.json key)")
            command.add_argument("--out", default=None, help="directory for table.md and table.csv (new or empty)")
        elif name == "bench":
            command.add_argument("which", choices=tuple(BENCHMARKS))
            command.add_argument("args", nargs=argparse.REMAINDER, help="passed to the benchmark script")
        elif name == "hardware":
            command.add_argument("action", choices=("run",), help="run: the Lava program on a --target lava export")
            command.add_argument("directory", help="export directory (eprop-l2l export RUN --target lava --out DIR)")
            command.add_argument("args", nargs=argparse.REMAINDER,
                                 help="--tasks N, --precision float|fixed, --signal replay|module, --out OUT, ...")
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
        elif name == "compare":
            command.add_argument("preset", nargs="?", default="tiny",
                                 help="tiny | copy_repeat_lstm | copy_repeat_alif | store_recall_alif | FILE.yaml")
            command.add_argument("overrides", nargs="*", help="e.g. iterations=200 rules=bptt,eprop3(k=10) "
                                 "seeds=[0,1] task.pattern_length=3 cell.n_rec=32")
            command.add_argument("--out", default=None, help="output directory (default runs/compare/PRESET)")
            command.add_argument("--in-process", action="store_true",
                                 help="run every rule in this process (faster start; peak memory less meaningful)")
        elif name == "demo-eprop1":
            command.add_argument("--out", default="runs/demo_eprop1", help="run directory")
            # the kinds are error_modules.feedback's (checked by the command): --help stays free of torch
            command.add_argument("--feedback", default="random", help="symmetric | random | adaptive")
            command.add_argument("--iterations", type=int, default=150)
            command.add_argument("--seed", type=int, default=0)
    return parser


def _fail(message: str, code: int = 2) -> int:
    """The one stderr line of every refusal and fault: control characters escaped, long values cut."""
    from .messages import one_line

    print(f"eprop-l2l: {one_line(message)}", file=sys.stderr, flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()
        args, extra = parser.parse_known_args(argv)
        if extra and (not hasattr(args, "overrides") or any(e.startswith("-") for e in extra)):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        if extra:  # overrides after an option (evaluate RUN --out DIR a=1): argparse leaves them over
            args.overrides = [*args.overrides, *extra]
    except SystemExit as stop:  # usage errors (one line, see _Parser) and --help: an exit code, not an exception
        return stop.code if isinstance(stop.code, int) else 0
    try:
        if args.command == "train":
            from .commands import train

            return train.main(args.overrides, multirun=args.multirun, show_config=args.cfg)
        if args.command == "evaluate":
            from .commands.evaluate import evaluate

            return evaluate(args.target, args.overrides, args.out)
        if args.command == "table":
            from .commands.table import table

            return table(args.rows, args.reference, args.out, args.metric)
        if args.command == "plot":
            from .commands.plot import plot

            return plot(args.run, args.out)
        if args.command == "bench":
            from .commands import bench

            return bench.main(args.which, args.args)
        if args.command == "compare":
            from .commands import compare

            isolate = [] if args.in_process else ["isolate=true"]
            return compare.main(args.preset, [*isolate, *args.overrides], args.out)
        if args.command == "demo-eprop1":
            from .commands import demo

            return demo.main(args.out, args.feedback, args.iterations, args.seed)
        if args.command == "hardware":
            from .commands import hardware

            return hardware.main(args.directory, args.args)
        from .commands import export

        return export.main(args.source, args.out, args.target, args.force, args.tasks, args.calibration_tasks,
                           args.precision)
    except (Exception, KeyboardInterrupt) as err:
        from .commands.guards import failure, is_bug

        if is_bug(err) and os.environ.get("EPROP_L2L_TRACEBACK"):
            raise
        code, line = failure(err)
        return code if _another_rank_shares(err, code) else _fail(line, code)


def _another_rank_shares(err: BaseException, code: int) -> bool:
    """A torchrun process other than rank 0 whose failure every process meets alike: a refusal of the
    configuration (the same checks of the same values; not one of this process's own variables, whose keys are
    upper case: LOCAL_RANK, ...), an interrupt, a peer lost after the start. Rank 0 alone prints it, so it shows
    once; a failure of a process's own (and a group that never formed: rank 0 may be the one missing) is
    printed by that process."""
    world, rank = os.environ.get("WORLD_SIZE", "1").strip(), os.environ.get("RANK", "0").strip()
    if not (world.isdigit() and rank.isdigit() and 0 < int(rank) < int(world)):
        return False
    from .runs.distributed import LostPeer

    own_variable = str(getattr(err, "key", "")).isupper()
    return (code == 2 and not own_variable) or code == 130 or isinstance(err, LostPeer)

if __name__ == "__main__":
    sys.exit(main())
