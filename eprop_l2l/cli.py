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
        sub.add_parser(name, help=help_text)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "demo":
        from . import demo

        result = demo.main()
        return result if isinstance(result, int) else 0
    print(f"eprop-l2l {args.command}: not implemented yet", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
