"""`ditto-eval report`: options; the work is `data_tools.eval.report`."""
from __future__ import annotations

import sys
from pathlib import Path

from ditto_native import DittoError


def register(sub) -> None:
    p = sub.add_parser(
        "report", help="compare models: tables with bootstrap intervals and a bar chart",
        description=(
            "Reads results files (from `ditto-eval run` and `ditto-eval mtbench`) and vote files (from `ditto-jax serve "
            "--ui --votes`), recognised by content, and writes "
            "a Markdown report with All/en/zh x metric tables, judge-based and judge-free, per model, differences "
            "against the first model, and 95% bootstrap intervals over sessions; beside it a JSON file with every "
            "number and a PNG bar chart. Vote files add win rates per model pair with bootstrap intervals, and "
            "Bradley-Terry scores for three or more models. Model names come from the files."
        ),
    )
    p.add_argument("results", nargs="+", type=Path, metavar="RESULTS", help="results and vote files; the first results file's model is the baseline")
    p.add_argument("--out", required=True, type=Path, help="report.md (report.json and report.png go beside it)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(func=_report)


def _report(args) -> int:
    from data_tools.eval.report import build_report, write_report

    if args.out.suffix.lower() in (".json", ".png"):
        raise DittoError(f"--out {args.out}: the report is Markdown; its .json and .png are written beside it")
    written = write_report(build_report(args.results, seed=args.seed, resamples=args.resamples), args.out)
    print(f"ditto-eval report: wrote {', '.join(map(str, written))}", file=sys.stderr)
    return 0
