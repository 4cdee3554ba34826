"""Character knowledge: the `characters` stage.

Wikidata dump (Rust streaming filter) -> ranked Polars table with readable
claims and Wikipedia profiles, or the built-in sample; see `ditto-data characters --help`.
"""
from __future__ import annotations

from .build import characters_from_dump, characters_from_sample
from .cli import register
from .config import DEFAULT_CLASSES, DEFAULT_PROPERTIES, CharactersConfig
from .dump import DumpScan, format_report, remove_checkpoint, scan_dump
from .profiles import attach_profiles, load_wikipedia, render_facts, truncate_at_sentence
from .rank import top_per_category
from .sample import load_sample
from .schema import CHARACTER_SCHEMA

__all__ = [
    "CHARACTER_SCHEMA",
    "DEFAULT_CLASSES",
    "DEFAULT_PROPERTIES",
    "CharactersConfig",
    "DumpScan",
    "attach_profiles",
    "characters_from_dump",
    "characters_from_sample",
    "format_report",
    "load_sample",
    "load_wikipedia",
    "register",
    "remove_checkpoint",
    "render_facts",
    "scan_dump",
    "top_per_category",
    "truncate_at_sentence",
]
