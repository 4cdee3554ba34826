"""`ditto-data`: the data toolkit's command line.

Each subcommand lives in its own module exposing `register(subparsers)`; the
shared convention (common flags, one-line errors) is in `ditto_jax.cli_common`.
"""
from __future__ import annotations

import sys

from ditto_jax.cli_common import build_parser as _build, run_main

# Subcommand modules, in the order `--help` lists them.
_SUBCOMMANDS: list[str] = ["characters", "simulate", "clean", "tokenize", "stats", "build"]
_DESCRIPTION = "Ditto data toolkit: characters, simulation, cleaning, tokenization."


def build_parser():
    return _build("ditto-data", _DESCRIPTION, [f"data_tools.{name}" for name in _SUBCOMMANDS])


def main(argv: list[str] | None = None) -> int:
    return run_main("ditto-data", _DESCRIPTION, [f"data_tools.{name}" for name in _SUBCOMMANDS], argv)


if __name__ == "__main__":
    sys.exit(main())
