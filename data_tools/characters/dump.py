"""Scanning a Wikidata JSON dump with the Rust filter (`ditto_native.wikidata_scan`)."""
from __future__ import annotations

import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import ditto_native

from .config import CharactersConfig

if TYPE_CHECKING:  # Polars loads once the scan is done (the CLI imports it on a thread meanwhile)
    import polars as pl


@dataclass(frozen=True)
class DumpScan:
    """Rows (without profiles) and the scan's counts (see `format_report`)."""

    rows: pl.DataFrame
    stats: dict


def scan_dump(
    path: str | Path,
    config: CharactersConfig,
    *,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> DumpScan:
    """Scans the dump at `path` (plain, .gz or .bz2).

    With `checkpoint`, the scan saves its progress there (and in
    `checkpoint.journal` and `checkpoint.labels`) after every chunk and resumes
    from it when run again with the same file and settings. The files are left
    in place; `remove_checkpoint` deletes them once the output is written.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    bar = None
    on_chunk = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=path.stat().st_size, unit="B", unit_scale=True, unit_divisor=1024,
                   desc="wikidata", file=sys.stderr)

        def on_chunk(done: int, total: int, entities: int, held: int) -> None:
            bar.update(done - bar.n)
            bar.set_postfix(entities=entities, kept=held, refresh=False)

    try:
        rows, stats = ditto_native.wikidata_scan(
            str(path),
            languages=list(config.languages),
            classes=list(config.classes),
            properties=list(config.properties),
            keep_top=config.per_category,
            chunk_bytes=config.chunk_bytes,
            checkpoint=None if checkpoint is None else str(checkpoint),
            progress=on_chunk,
        )
    finally:
        if bar is not None:
            bar.close()
    import polars as pl

    from .schema import SCAN_SCHEMA

    frame = pl.read_ndjson(io.BytesIO(rows), schema=SCAN_SCHEMA) if rows else pl.DataFrame(schema=SCAN_SCHEMA)
    return DumpScan(rows=frame, stats=json.loads(stats))


def remove_checkpoint(checkpoint: str | Path) -> None:
    """Deletes a scan checkpoint's files."""
    checkpoint = Path(checkpoint)
    for suffix in ("", ".journal", ".labels", ".tmp"):
        checkpoint.with_name(checkpoint.name + suffix).unlink(missing_ok=True)


def _lines(entry: dict) -> str:
    shown = ", ".join(str(n) for n in entry["first_lines"])
    more = ", …" if entry["count"] > len(entry["first_lines"]) else ""
    word = "line" if len(entry["first_lines"]) == 1 else "lines"
    return f"{entry['count']} ({word} {shown}{more})"


def format_report(stats: dict, rows: pl.DataFrame | None = None) -> list[str]:
    """The scan's counts as short lines for the terminal; bad input first."""
    out = []
    s = stats
    if s["malformed"]["count"]:
        out.append(f"malformed lines skipped: {_lines(s['malformed'])}")
    if s["invalid_utf8"]["count"]:
        out.append(f"lines that are not UTF-8 skipped: {_lines(s['invalid_utf8'])}")
    for lang, entry in s["missing_label"].items():
        out.append(f"characters without a {lang} label (no {lang} row): {_lines(entry)}")
    if s["no_label"]["count"]:
        out.append(f"characters with no label in any requested language, dropped: {_lines(s['no_label'])}")
    if s["duplicate"]["count"]:
        out.append(f"duplicate entity ids skipped: {_lines(s['duplicate'])}")
    if s["stream_error"]:
        e = s["stream_error"]
        out.append(f"compressed stream cut short or corrupt at line {e['line']} ({e['message']}); kept what was read before it")
    if s["missing_close"]:
        out.append("the dump ends without its closing ']' line: it may be cut short; kept what was read")
    summary = f"read {s['lines']} lines, {s['entities']} entities, {s['matched']} characters; {s['rows']} rows"
    if rows is not None and rows.height:
        per = rows.group_by("lang", maintain_order=True).len()
        summary += " (" + ", ".join(f"{lang}: {n}" for lang, n in per.iter_rows()) + ")"
    out.append(summary)
    if s["unresolved"]:
        out.append(f"referenced entities not in the dump, shown by id: {s['unresolved']}")
    if s["resumed_at_line"] is not None:
        out.append(f"resumed from a checkpoint at line {s['resumed_at_line']}")
    return out
