"""`ditto-data`: the data toolkit's command line.

Each subcommand lives in its own module exposing `register(subparsers)`; this
file only dispatches and turns project errors into one-line messages.
"""
from __future__ import annotations

import argparse
import sys

from ditto_native import DittoError

# Subcommand modules, in the order `--help` lists them.
_SUBCOMMANDS: list[str] = ["characters", "simulate", "clean", "tokenize", "stats", "build"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditto-data", description="Ditto data toolkit: characters, simulation, cleaning, tokenization.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    import importlib

    for name in _SUBCOMMANDS:
        importlib.import_module(f"data_tools.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (DittoError, FileNotFoundError, PermissionError) as exc:
        print(f"ditto-data {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditto-data {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
