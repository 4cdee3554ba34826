"""The characters.parquet contract (see DESIGN.md, Contracts)."""
from __future__ import annotations

import polars as pl

CLAIM = pl.Struct({"property": pl.String, "value": pl.String})

CHARACTER_SCHEMA = pl.Schema(
    {
        "character_id": pl.String,  # Wikidata id (Q…)
        "lang": pl.String,
        "category": pl.String,  # human | fictional
        "label": pl.String,
        "description": pl.String,  # "" when missing
        "aliases": pl.List(pl.String),
        "sitelinks": pl.Int64,  # all sitelinks: the paper's popularity measure
        "wiki_title": pl.String,  # the language's Wikipedia title, or null
        "claims": pl.List(CLAIM),  # readable "property: value" pairs
        "profile": pl.String,  # Wikipedia text, or the facts rendered as text
    }
)

# What the dump scan returns: everything but the profile.
SCAN_SCHEMA = pl.Schema({k: v for k, v in CHARACTER_SCHEMA.items() if k != "profile"})


def conform(df: pl.DataFrame) -> pl.DataFrame:
    """Columns in contract order and types; raises if one is missing."""
    return df.select([pl.col(name).cast(dtype) for name, dtype in CHARACTER_SCHEMA.items()])
