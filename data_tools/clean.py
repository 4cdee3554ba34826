"""`ditto-data clean`: quality checks and dedupe of simulated dialogues.

Reads dialogues.parquet, writes the sessions that pass to --out and every
dropped session or turn, with its reason code, to --quarantine. A JSON report
(counts per reason, a few examples each) goes to --report, by default beside
--out as <out stem>.report.json; its summary is printed.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import polars as pl
from tqdm import tqdm

from data_tools.cleaning import clean_dialogues, load_config
from data_tools.cleaning.report import build_report
from data_tools.cleaning.schema import read_dialogues
from ditto_jax.atomic_io import atomic_path, write_text_atomic

_HELP_POLICY = (
    "A failed turn is dropped while at least min_turns (default 2) turns remain; otherwise the whole "
    "session is quarantined with the reason of its first failed turn. Set turn_failure = \"drop_session\" "
    "in the config to quarantine a session on any failure. Besides the Rust checks: prompt_echo (a question, "
    "answer or evidence string repeating the simulation prompts' scaffolding), and, when the table has a "
    "`pairings` column, contrastive turns marked fallback are dropped as label_mismatch while min_turns other "
    "turns remain (drop_fallback_turns)."
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "clean",
        help="drop low-quality and duplicate dialogue turns/sessions into a quarantine",
        description=__doc__,
        epilog=_HELP_POLICY,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--in", dest="input", required=True, type=Path, help="dialogues.parquet (the dialogues contract)")
    p.add_argument("--out", required=True, type=Path, help="clean.parquet to write (same schema)")
    p.add_argument("--quarantine", required=True, type=Path, help="quarantine.parquet to write (+ reason, detail, level, turn_index)")
    p.add_argument("--report", type=Path, help="JSON report path (default: <out stem>.report.json beside --out)")
    p.add_argument("--config", type=Path, help="TOML or JSON settings (top level or a [clean] table); null/false turns a check off")
    p.set_defaults(func=run)


def _write_parquet(df: pl.DataFrame, path: Path) -> None:
    """Writes via the one atomic writer, so that a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        df.write_parquet(tmp)


def run(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    report_path = args.report or args.out.with_name(f"{args.out.stem}.report.json")
    with tqdm(total=3, desc="clean", unit="step", file=sys.stderr) as bar:
        bar.set_postfix_str("read")
        df = read_dialogues(args.input)
        bar.update()
        bar.set_postfix_str(f"checks and dedupe on {df.height} sessions")
        result = clean_dialogues(df, cfg)
        bar.update()
        bar.set_postfix_str("write")
        _write_parquet(result.clean, args.out)
        _write_parquet(result.quarantine, args.quarantine)
        files = {"in": str(args.input), "out": str(args.out), "quarantine": str(args.quarantine)}
        report = build_report(result.stats, result.quarantine, cfg, files)
        write_text_atomic(report_path, json.dumps(report, ensure_ascii=False, indent=2) + "\n")
        bar.update()
    print(result.stats.summary())
    print(f"report: {report_path}")
    return 0
