"""`ditto-data`: the data toolkit's command line.

Each subcommand lives in its own module exposing `register(subparsers)`; this
file only dispatches and turns project errors into one-line messages.

Only the module of the subcommand being run is imported: the others appear in
`--help` through the one-line summaries below, so that `ditto-data --help` and
`ditto-data characters --help` do not pay for Polars, PyArrow, the tokenizer or
JAX (`python -X importtime -m data_tools.cli --help` shows what is loaded).
"""
from __future__ import annotations

import argparse
import importlib
import sys

from ditto_native import DittoError

# Subcommand -> (module with `register`, its one-line help), in `--help` order.
# tests/test_cli_lazy.py checks each summary against the module's own.
_SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "characters": ("data_tools.characters.cli", "build characters.parquet from a Wikidata dump or the built-in sample"),
    "simulate": ("data_tools.simulate", "simulate role-play dialogues for characters with an LLM"),
    "clean": ("data_tools.clean", "drop low-quality and duplicate dialogue turns/sessions into a quarantine"),
    "tokenize": ("data_tools.tokenize", "render, tokenize, loss-mask and pack dialogues into train/held-out shards"),
    "stats": ("data_tools.stats", "summarise a stage output (characters, dialogues, clean/quarantine, shards)"),
    "build": ("data_tools.build", "run characters -> simulate -> clean -> tokenize from one config"),
}


def _chosen(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first non-option word)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: the named subcommand fully registered, every
    other one as a placeholder carrying its summary. With `argv=None` every
    subcommand is registered (for tools that inspect the whole parser)."""
    parser = argparse.ArgumentParser(prog="ditto-data", description="Ditto data toolkit: characters, simulation, cleaning, tokenization.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else _chosen(argv)
    for name, (module, summary) in _SUBCOMMANDS.items():
        if argv is None or name == chosen:
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser(argv).parse_args(argv)
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
