"""`ditto-jax`: the model side's command line (generate, chat, serve, train, export).

Each subcommand module exposes `register(subparsers)`; the shared convention
(lazy subcommands, common flags, compile cache, one-line errors) is in
`ditto_jax.cli_common`.
"""
from __future__ import annotations

import sys

from ditto_jax.cli_common import build_parser as _build, run_main

# Subcommand -> (module with `register`, its one-line help), in `--help` order.
# tests/test_cli_lazy.py checks each summary against the module's own.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "generate": ("ditto_jax.generation.commands", "reply to one prompt; prints only the reply"),
    "chat": ("ditto_jax.generation.commands", "multi-turn chat on stdin/stdout"),
    "serve": ("ditto_jax.serve", "OpenAI-compatible chat server"),
    "train": ("ditto_jax.train.commands", "fine-tune a model on packed shards (SFT)"),
    "export": ("ditto_jax.export.commands", "write a model as a Hugging Face directory or a GGUF file"),
}
PROG = "ditto-jax"
_DESCRIPTION = "Ditto JAX model tools: generation, chat, an OpenAI-compatible server, training and export."


def build_parser(argv: list[str] | None = None):
    return _build(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
