"""`ditto-eval`: build, run, mtbench, report.

Each subcommand lives in `data_tools.eval.commands`; the shared convention
(common flags, one-line errors, exit status 2 on bad input) is in
`ditto_jax.cli_common`. `build`, `run` and `mtbench` store every LLM call in
a call cache (default: beside --out), so a re-run after a crash or kill
repeats no call.
"""
from __future__ import annotations

import sys

from ditto_jax.cli_common import build_parser as _build, run_main

PROG = "ditto-eval"
_SUBCOMMANDS = [f"data_tools.eval.commands.{name}" for name in ("build", "run", "mtbench", "report")]
_DESCRIPTION = (
    "WikiRoleEval-style role-play evaluation: build a benchmark from held-out characters, run a model and an LLM "
    "judge, MT-Bench roleplay, and compare models in a report."
)


def build_parser():
    return _build(PROG, _DESCRIPTION, _SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _DESCRIPTION, _SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
