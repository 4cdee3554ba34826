"""Ranking characters by popularity."""
from __future__ import annotations

import polars as pl


def top_per_category(df: pl.DataFrame, n: int | None) -> pl.DataFrame:
    """The top `n` rows per (category, lang) by sitelinks, ties broken by the
    numeric id (Q42 before Q100); all rows when `n` is None. The result is
    ordered by lang, category, then rank, so it is the same for any input order.
    """
    numeric = pl.col("character_id").str.extract(r"^Q(\d+)$").cast(pl.UInt64)
    ranked = df.with_columns(_numeric=numeric).sort(
        ["lang", "category", "sitelinks", "_numeric", "character_id"],
        descending=[False, False, True, False, False],
        nulls_last=True,
        maintain_order=True,
    )
    if n is not None:
        # head() moves the group keys first; keep the input's column order.
        ranked = ranked.group_by(["lang", "category"], maintain_order=True).head(n).select(ranked.columns)
    return ranked.drop("_numeric")
