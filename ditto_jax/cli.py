"""`ditto-jax`: the model side's command line (generate, chat, serve, train, export).

Each subcommand module exposes `register(subparsers)`; the shared convention
(common flags, compile cache, one-line errors) is in `ditto_jax.cli_common`.
"""
from __future__ import annotations

import sys

from ditto_jax.cli_common import build_parser as _build, run_main

# Modules under ditto_jax whose `register` adds subcommands, in `--help` order.
_SUBCOMMANDS: list[str] = ["generation.commands", "serve", "train.commands"]
_DESCRIPTION = "Ditto JAX model tools: generation, chat, an OpenAI-compatible server, training and export."


def build_parser():
    return _build("ditto-jax", _DESCRIPTION, [f"ditto_jax.{name}" for name in _SUBCOMMANDS])


def main(argv: list[str] | None = None) -> int:
    return run_main("ditto-jax", _DESCRIPTION, [f"ditto_jax.{name}" for name in _SUBCOMMANDS], argv)


if __name__ == "__main__":
    sys.exit(main())
