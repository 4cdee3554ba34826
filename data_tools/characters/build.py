"""The `characters` stage as functions: dump or sample in, ranked table with profiles out."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from .config import CharactersConfig
from .dump import DumpScan, scan_dump
from .profiles import attach_profiles, cut_at_sentence, load_wikipedia
from .rank import top_per_category
from .sample import load_sample
from .schema import conform


def characters_from_dump(
    dump: str | Path,
    config: CharactersConfig,
    *,
    wikipedia: str | Path | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = True,
) -> tuple[pl.DataFrame, DumpScan]:
    """Scans `dump`, keeps the top characters, and attaches profiles from the
    `wikipedia` table (or their facts as text). Returns the table and the scan."""
    scan = scan_dump(dump, config, checkpoint=checkpoint, progress=progress)
    return characters_from_scan(scan, config, wikipedia=wikipedia), scan


def characters_from_scan(scan: DumpScan, config: CharactersConfig, *, wikipedia: str | Path | None = None) -> pl.DataFrame:
    """The second half of `characters_from_dump`: rank the scanned rows and attach profiles."""
    ranked = top_per_category(scan.rows, config.per_category)
    wiki = None
    if wikipedia is not None:
        titles = set(ranked.get_column("wiki_title").drop_nulls().to_list())
        wiki = load_wikipedia(wikipedia, titles)
    table = attach_profiles(ranked, wiki, config.profile_chars, config.values_per_property)
    return conform(table)


def characters_from_sample(config: CharactersConfig) -> pl.DataFrame:
    """The built-in sample for `config.languages`, ranked and cut like a dump's rows."""
    ranked = top_per_category(load_sample(config.languages), config.per_category)
    return conform(ranked.with_columns(profile=cut_at_sentence(pl.col("profile"), config.profile_chars)))
