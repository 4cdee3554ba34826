"""`ditto-data characters`: build characters.parquet from a Wikidata dump or the built-in sample."""
from __future__ import annotations

import argparse
import importlib
import sys
import threading
from pathlib import Path

from ditto_native import DittoError

# Polars, the scan and the profile code load in `run`, so `--help` stays fast.
from .config import DEFAULT_CLASSES, CharactersConfig, parse_classes, parse_list

_DESCRIPTION = """\
Build the character table (one row per character and language) from the
Wikidata JSON dump (plain, .gz or .bz2), optionally with Wikipedia articles as
profiles, or from the built-in sample of well-known characters.

Characters are instances of the requested classes (default: Q5 human and
Q15632617 fictional human; fictional wins), ranked by sitelinks; the top N per
(category, language) are kept. Claims are read as "property: value" labels in
the row's language. A profile is the character's Wikipedia article, or its
facts as text, cut at a sentence end.

A dump scan saves a checkpoint (OUT.scan-checkpoint, with .journal and .labels
beside it) after every chunk; run the same command again after a crash to
resume, and the files are removed once OUT is written. The .labels file holds
every entity's labels in the requested languages (a few GB for the full
dump), so claim values can be named wherever the entity is in the file.
Bad lines are counted and reported with their line numbers; the rest is kept."""


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "characters",
        help="build characters.parquet from a Wikidata dump or the built-in sample",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--wikidata", metavar="DUMP", help="Wikidata JSON dump: .json, .json.gz or .json.bz2")
    src.add_argument("--sample", action="store_true", help="use the built-in sample characters")
    p.add_argument("--wikipedia", metavar="FILE", help="Parquet or JSONL table of (title, text[, lang]) articles")
    p.add_argument("--languages", default="en,zh", help="row languages, comma-separated (default: en,zh)")
    p.add_argument(
        "--per-category", type=int, default=1000, metavar="N",
        help="keep the top N by sitelinks per (category, language); 0 keeps all (default: 1000)",
    )
    p.add_argument("--out", required=True, metavar="FILE", help="output Parquet file")
    p.add_argument("--profile-chars", type=int, default=4000, metavar="N", help="profile budget in characters (default: 4000)")
    p.add_argument("--properties", metavar="P,…", help="claim properties to keep, in order (default: a list of biographical and fictional-work properties)")
    p.add_argument(
        "--classes", metavar="Q=CATEGORY,…",
        help="classes and their categories, first match wins (default: "
        + ",".join(f"{q}={c}" for q, c in DEFAULT_CLASSES) + ")",
    )
    p.add_argument("--checkpoint", metavar="FILE", help="checkpoint path; .journal and .labels files go beside it (default: OUT.scan-checkpoint)")
    p.add_argument("--chunk-bytes", type=int, default=16 << 20, metavar="N", help="decompressed bytes per scan chunk, the checkpoint unit (default: 16 MiB)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace) -> CharactersConfig:
    kwargs = {}
    if args.properties:
        kwargs["properties"] = parse_list(args.properties)
    if args.classes:
        kwargs["classes"] = parse_classes(args.classes)
    return CharactersConfig(
        languages=parse_list(args.languages),
        per_category=args.per_category or None,
        profile_chars=args.profile_chars,
        chunk_bytes=args.chunk_bytes,
        **kwargs,
    )


def _write_atomically(table, out: Path) -> None:
    from ditto_jax.atomic_io import atomic_path

    with atomic_path(out) as tmp:
        table.write_parquet(tmp)


def _import_meanwhile(module: str) -> None:
    """Starts importing `module` (of this package) on a daemon thread.

    Perf: Polars takes about 0.25 s CPU to import, as long as the scan of a
    100 MB dump, and the scan needs none of it: it runs in Rust without the
    GIL, so the import overlaps it. A failed import is left to the main
    thread's own import of the module, which raises it again.
    """

    def load() -> None:
        try:
            importlib.import_module(module, __package__)
        except BaseException:  # raised again by the real import
            pass

    threading.Thread(target=load, name=f"import {module}", daemon=True).start()


def run(args: argparse.Namespace) -> int:
    if args.per_category < 0:
        raise DittoError(f"--per-category must be 0 or more, got {args.per_category}")
    if args.sample and args.wikipedia:
        raise DittoError("--wikipedia goes with --wikidata, not --sample")
    from .dump import format_report, remove_checkpoint, scan_dump

    config = _config(args)
    out = Path(args.out)
    if args.sample:
        from .build import characters_from_sample

        table = characters_from_sample(config)
        _write_atomically(table, out)
        print(f"wrote {table.height} sample rows to {out}", file=sys.stderr)
        return 0
    checkpoint = Path(args.checkpoint) if args.checkpoint else out.with_name(out.name + ".scan-checkpoint")
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    _import_meanwhile(".build")
    try:
        # The two halves of `characters_from_dump`, so that Polars loads during the scan.
        scan = scan_dump(args.wikidata, config, checkpoint=checkpoint, progress=not args.no_progress)
        from .build import characters_from_scan

        table = characters_from_scan(scan, config, wikipedia=args.wikipedia)
    except FileNotFoundError:
        raise
    except OSError as exc:  # a read error deep in the dump: one line, not a traceback
        raise DittoError(str(exc)) from None
    _write_atomically(table, out)
    # The output is durable now; the checkpoint has done its job.
    remove_checkpoint(checkpoint)
    for line in format_report(scan.stats, table):
        print(line, file=sys.stderr)
    print(f"wrote {table.height} rows to {out}", file=sys.stderr)
    return 0
