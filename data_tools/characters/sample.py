"""The built-in sample: well-known characters, real and fictional, in English
and Chinese, written for this project as facts in the table schema.

It is small enough to ship in the wheel and lets every later stage run
offline. Ids are Wikidata ids where the authors were sure of them; the others
are `sample:<name>` so that no id is guessed. Sitelink counts are approximate.
"""
from __future__ import annotations

import json
from importlib import resources

import polars as pl
from ditto_native import DittoError

from .schema import CHARACTER_SCHEMA


def sample_records() -> list[dict]:
    """The sample file's character records."""
    text = resources.files("data_tools").joinpath("sample/characters.json").read_text(encoding="utf-8")
    return json.loads(text)["characters"]


def load_sample(languages: tuple[str, ...] | list[str]) -> pl.DataFrame:
    """One row per sample character and requested language, with the
    sample's own profile (not yet cut to a budget)."""
    records = sample_records()
    have = sorted({lang for r in records for lang in r["langs"]})
    missing = [lang for lang in languages if lang not in have]
    if missing:
        raise DittoError(f"the built-in sample has languages {', '.join(have)}; not {', '.join(missing)}")
    rows = []
    for lang in languages:
        for r in records:
            t = r["langs"].get(lang)
            if t is None:
                continue
            rows.append(
                {
                    "character_id": r["id"],
                    "lang": lang,
                    "category": r["category"],
                    "label": t["label"],
                    "description": t["description"],
                    "aliases": t["aliases"],
                    "sitelinks": r["sitelinks"],
                    "wiki_title": t.get("wiki_title"),
                    "claims": [{"property": p, "value": v} for p, v in t["claims"]],
                    "profile": t["profile"],
                }
            )
    return pl.DataFrame(rows, schema=CHARACTER_SCHEMA)
