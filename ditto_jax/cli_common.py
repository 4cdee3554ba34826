"""The one command-line convention of `ditto-data`, `ditto-jax` and `ditto-eval`.

* Subcommands live in modules exposing `register(subparsers)`. Those modules
  import jax, flax or polars inside their run functions, not at module level,
  so `--help` answers without loading the numeric stack.
* `--verbose` and `--no-progress` are accepted before or after the subcommand.
* The persistent XLA compilation cache is configured through the environment
  *before* anything imports jax (jax reads these variables once, at import).
* One error handler: a project error (`DittoError`) or an OS error becomes one
  line on stderr and exit status 2, never a traceback.

Import-light on purpose (standard library and `ditto_native` only): `data_tools`
uses it too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from ditto_native import DittoError

DEFAULT_XLA_CACHE = Path.home() / ".cache" / "ditto-jax" / "xla"


def configure_runtime_env() -> None:
    """Environment defaults that must be in place before jax is imported."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(DEFAULT_XLA_CACHE))
    # Cache every executable, not only those that took over a second: the CLI's
    # decode and train steps compile in well under that on small models.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_COMMON_FLAGS = {"--verbose": "show library logs on stderr", "--no-progress": "hide progress bars"}


def _add_common_flags(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # After the subcommand, a flag left out must not overwrite one given before it.
    default = False if top_level else argparse.SUPPRESS
    known = {opt for action in parser._actions for opt in action.option_strings}
    for flag, help_text in _COMMON_FLAGS.items():
        if flag not in known:  # a subcommand that defines the flag itself keeps its own
            parser.add_argument(flag, action="store_true", default=default, help=help_text)


def build_parser(prog: str, description: str, modules: Sequence[str]) -> argparse.ArgumentParser:
    """A parser whose subcommands come from `register(subparsers)` in each module, in order."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _add_common_flags(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in modules:
        importlib.import_module(name).register(subparsers)
    for sub in subparsers.choices.values():
        _add_common_flags(sub, top_level=False)
    return parser


def one_line(exc: BaseException) -> str:
    """The message of an error, collapsed to one line, with the path for OS errors."""
    if isinstance(exc, OSError) and not isinstance(exc, DittoError):
        where = exc.filename if exc.filename is not None else ""
        what = exc.strerror or str(exc)
        message = f"{where}: {what}" if where else what
    else:
        message = str(exc) or type(exc).__name__
    return " ".join(message.split())


def _quiet_logs(verbose: bool) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    if not verbose:
        for name in ("jax", "absl", "flax", "orbax", "httpx", "uvicorn"):
            logging.getLogger(name).setLevel(logging.ERROR)


def run_main(prog: str, description: str, modules: Sequence[str], argv: list[str] | None = None) -> int:
    """Parse, set up the runtime, run the subcommand; errors become one line and exit 2."""
    configure_runtime_env()
    if "--no-progress" in (sys.argv[1:] if argv is None else argv):
        # tqdm reads its TQDM_* overrides once, when it is imported, and the
        # subcommand modules import it while the parser is built: set it first.
        os.environ["TQDM_DISABLE"] = "1"
    args = build_parser(prog, description, modules).parse_args(argv)
    _quiet_logs(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (DittoError, OSError) as exc:
        print(f"{prog} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
