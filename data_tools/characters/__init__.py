"""Character knowledge: the `characters` stage.

Wikidata dump (Rust streaming filter) -> ranked Polars table with readable
claims and Wikipedia profiles, or the built-in sample; see `ditto-data characters --help`.
"""
from __future__ import annotations

import importlib

# Names load on first use (PEP 562), so that importing the CLI module of this
# package does not import Polars and the scan.
_EXPORTS = {
    "characters_from_dump": ".build",
    "characters_from_scan": ".build",
    "characters_from_sample": ".build",
    "register": ".cli",
    "DEFAULT_CLASSES": ".config",
    "DEFAULT_PROPERTIES": ".config",
    "CharactersConfig": ".config",
    "DumpScan": ".dump",
    "format_report": ".dump",
    "remove_checkpoint": ".dump",
    "scan_dump": ".dump",
    "attach_profiles": ".profiles",
    "load_wikipedia": ".profiles",
    "render_facts": ".profiles",
    "truncate_at_sentence": ".profiles",
    "top_per_category": ".rank",
    "load_sample": ".sample",
    "CHARACTER_SCHEMA": ".schema",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value
