"""Command line: ``eprop-l2l demo | train | evaluate | bench | export`` (thin: config in, library call out)."""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "demo": "run the reduced one-shot learning demo (CPU, minutes)",
    "train": "meta-train a learning network and error module",
    "evaluate": "evaluate a checkpoint on held-out tasks",
    "bench": "run the performance benchmarks",
    "export": "export the learned inner-loop rule to hardware formats",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eprop-l2l", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        command = sub.add_parser(name, help=help_text)
        if name == "demo":
            command.add_argument("--out", default="runs/demo", help="run directory (default: runs/demo)")
            command.add_argument("--feedback", default="random", choices=("random", "symmetric", "adaptive"))
            command.add_argument("--iterations", type=int, default=150)
            command.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from . import demo

        if args.iterations < 1:
            print("eprop-l2l demo: --iterations must be >= 1", file=sys.stderr)
            return 2
        return demo.main(args.out, args.feedback, args.iterations, args.seed)
    print(f"eprop-l2l {args.command}: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
