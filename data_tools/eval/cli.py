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
# Subcommand -> (module with `register`, its one-line help); tests/test_cli_lazy.py checks the summaries.
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": ("data_tools.eval.commands.build", "build a WikiRoleEval-style evaluation file from held-out characters"),
    "run": ("data_tools.eval.commands.run", "answer an evaluation file with a model and score every turn with a judge"),
    "mtbench": ("data_tools.eval.commands.mtbench", "MT-Bench roleplay: two-turn answers, single-answer 1-10 grading"),
    "report": ("data_tools.eval.commands.report", "compare models: tables with bootstrap intervals and a bar chart"),
}
_DESCRIPTION = (
    "WikiRoleEval-style role-play evaluation: build a benchmark from held-out characters, run a model and an LLM "
    "judge, MT-Bench roleplay, and compare models in a report."
)


def build_parser(argv: list[str] | None = None):
    return _build(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


def main(argv: list[str] | None = None) -> int:
    return run_main(PROG, _DESCRIPTION, SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
