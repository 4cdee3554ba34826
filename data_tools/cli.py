"""`ditto-data`: the data toolkit's command line.

Each subcommand lives in its own module exposing `register(subparsers)`; the
shared convention (lazy subcommands, common flags, one-line errors) is in
`ditto_jax.cli_common`. Only the module of the subcommand being run is
imported, so `ditto-data --help` and `ditto-data characters --help` do not pay
for Polars, PyArrow, the tokenizer or JAX
(`python -X importtime -m data_tools.cli --help` shows what is loaded).
"""
from __future__ import annotations

import sys

from ditto_jax.cli_common import build_parser as _build, run_main

# Subcommand -> (module with `register`, its one-line help), in `--help` order.
# tests/test_cli_lazy.py checks each summary against the module's own.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "characters": ("data_tools.characters.cli", "build characters.parquet from a Wikidata dump or the built-in sample"),
    "simulate": ("data_tools.simulate", "simulate role-play dialogues for characters with an LLM"),
    "clean": ("data_tools.clean", "drop low-quality and duplicate dialogue turns/sessions into a quarantine"),
    "tokenize": ("data_tools.tokenize", "render, tokenize, loss-mask and pack dialogues into train/held-out shards"),
    "stats": ("data_tools.stats", "summarise a stage output (characters, dialogues, clean/quarantine, shards)"),
    "build": ("data_tools.build", "run characters -> simulate -> clean -> tokenize from one config"),
}
PROG = "ditto-data"
_DESCRIPTION = "Ditto data toolkit: characters, simulation, cleaning, tokenization."


def build_parser(argv: list[str] | None = None):
    return _build(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
