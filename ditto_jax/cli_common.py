"""The one command-line convention of `ditto-data`, `ditto-jax` and `ditto-eval`.

* Subcommands live in modules exposing `register(subparsers)`. Only the module
  of the subcommand being run is imported; the others appear in `--help` as
  their one-line summaries, so `--help` answers without loading the numeric stack.
* `--verbose` and `--no-progress` are accepted before or after the subcommand.
* The persistent XLA compilation cache is configured through the environment
  *before* anything imports jax (jax reads these variables once, at import).
* One error handler: a project error (`DittoError`) or an OS error becomes one
  line on stderr and exit status 2, never a traceback.
* One flag name per idea. A renamed flag keeps its old name as an alias with
  the same `dest`, so scripts and `ditto-data build` config keys
  (`max_answer_tokens`, ...) keep working:

  --max-new-tokens        reply length limit in tokens (generate, chat, serve,
                          simulate, eval run/mtbench); was --max-answer-tokens
                          (simulate, eval) and --default-max-tokens (serve)
  --max-query-tokens      the second limit of a command that also writes
                          questions (simulate, eval build)
  --judge-max-new-tokens  the judge's reply limit (eval run/mtbench); was
                          --judge-max-tokens
  --concurrency           generations in progress at once: HTTP requests in
                          flight, or rows decoded together in process
                          (simulate, eval build/run/mtbench, serve); was
                          --max-batch (serve)
  --judge-concurrency     the same for the judge (eval run/mtbench)

  Training batch sizes are another idea: the trainer's config keys
  `global_batch` and `micro_batch` (`ditto-jax train --set`).

Import-light on purpose (standard library and `ditto_native` only): `data_tools`
uses it too.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from ditto_native import DittoError

DEFAULT_XLA_CACHE = Path.home() / ".cache" / "ditto-jax" / "xla"


def configure_runtime_env() -> None:
    """Environment defaults that must be in place before jax is imported."""
    os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(DEFAULT_XLA_CACHE))
    # Cache every executable, not only those that took over a second: the CLI's
    # decode and train steps compile in well under that on small models.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    # -1: no size floor and no filesystem-specific override, so small programs are kept too.
    os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "-1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


_COMMON_FLAGS = {"--verbose": "show library logs on stderr", "--no-progress": "hide progress bars"}


def _add_common_flags(parser: argparse.ArgumentParser, *, top_level: bool) -> None:
    # After the subcommand, a flag left out must not overwrite one given before it.
    default = False if top_level else argparse.SUPPRESS
    known = {opt for action in parser._actions for opt in action.option_strings}
    for flag, help_text in _COMMON_FLAGS.items():
        if flag not in known:  # a subcommand that defines the flag itself keeps its own
            parser.add_argument(flag, action="store_true", default=default, help=help_text)


# Subcommand name -> (module whose `register(subparsers)` adds it, its one-line help).
Subcommands = Mapping[str, tuple[str, str]]


def chosen_subcommand(argv: Sequence[str]) -> str | None:
    """The subcommand named on a command line: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(prog: str, description: str, subcommands: Subcommands, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The parser for `argv`: only the named subcommand's module is imported and
    registered; every other subcommand is a placeholder carrying its summary, so
    `--help` loads no numeric library. With `argv=None` every module is registered.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    _add_common_flags(parser, top_level=True)
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = None if argv is None else chosen_subcommand(argv)
    if chosen in subcommands:
        # First, so that siblings the same module registers (generate and chat) are real, not placeholders.
        importlib.import_module(subcommands[chosen][0]).register(subparsers)
    imported: set[str] = set()
    for name, (module, summary) in subcommands.items():
        if name in subparsers.choices:
            continue  # registered along with a sibling from the same module
        if argv is None and module not in imported:
            imported.add(module)
            importlib.import_module(module).register(subparsers)
        else:
            subparsers.add_parser(name, help=summary, add_help=False)
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


def run_main(prog: str, description: str, subcommands: Subcommands, argv: list[str] | None = None) -> int:
    """Parse, set up the runtime, run the subcommand; errors become one line and exit 2."""
    configure_runtime_env()
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--no-progress" in argv:
        # tqdm reads its TQDM_* overrides once, when it is imported, and the
        # subcommand modules import it while the parser is built: set it first.
        os.environ["TQDM_DISABLE"] = "1"
    args = build_parser(prog, description, subcommands, argv).parse_args(argv)
    _quiet_logs(args.verbose)
    try:
        return int(args.func(args) or 0)
    except (DittoError, OSError) as exc:
        print(f"{prog} {args.command}: error: {one_line(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog} {args.command}: interrupted", file=sys.stderr)
        return 130
