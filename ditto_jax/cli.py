"""`ditto-jax`: the model side's command line (generate, chat, serve, train; export joins later).

Each subcommand module exposes `register(subparsers)`; this file only sets up
quiet logging, dispatches, and turns project errors into one-line messages.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from pathlib import Path

from ditto_native import DittoError

# Modules under ditto_jax whose `register` adds subcommands, in `--help` order.
_SUBCOMMANDS: list[str] = ["generation.commands", "serve", "train.commands"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ditto-jax", description="Ditto JAX model tools: generation, chat, an OpenAI-compatible server and SFT training.")
    parser.add_argument("--verbose", action="store_true", help="show JAX and library logs on stderr")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _SUBCOMMANDS:
        importlib.import_module(f"ditto_jax.{name}").register(subparsers)
    return parser


def _quiet_runtime(verbose: bool) -> None:
    """Logs go to stderr only, and JAX/absl chatter is silenced unless --verbose."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        for name in ("jax", "absl", "flax", "orbax"):
            logging.getLogger(name).setLevel(logging.ERROR)
    # Reuse compiled executables across runs: a CLI call otherwise recompiles every time.
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(Path.home() / ".cache" / "ditto-jax" / "xla"))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_runtime(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (DittoError, FileNotFoundError, PermissionError, IsADirectoryError) as exc:
        message = " ".join(str(exc).split())
        print(f"ditto-jax {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ditto-jax {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
