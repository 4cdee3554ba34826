"""Calls into the Rust core, one call per column (Arrow in, Arrow out)."""
from __future__ import annotations

import json

import polars as pl
import ditto_native

from data_tools.cleaning.config import CleanConfig


def _arrow(series: pl.Series):
    # Strings go across as Arrow string views, Polars' own layout, so nothing is copied;
    # the default large_string copied every text (0.10 s CPU for 6,000 session texts).
    return series.rechunk().to_arrow(compat_level=pl.CompatLevel.newest())


def check_turns(turns: pl.DataFrame, sessions: pl.DataFrame, cfg: CleanConfig) -> tuple[pl.Series, pl.Series]:
    """(reason, detail) per turn, null where a turn passes every check.

    `turns` has `_sid` (row of `sessions`), `question`, `answer`,
    `rejection_labels`, `finish_reasons`; `sessions` has lang, system, simulator.
    """
    reasons, details = ditto_native.check_turns(
        session_index=_arrow(turns["_sid"]),
        questions=_arrow(turns["question"]),
        answers=_arrow(turns["answer"]),
        rejection_labels=_arrow(turns["rejection_labels"]),
        finish_reasons=_arrow(turns["finish_reasons"]),
        langs=_arrow(sessions["lang"]),
        systems=_arrow(sessions["system"]),
        simulators=_arrow(sessions["simulator"]),
        config_json=json.dumps(cfg.filter_settings()),
        num_threads=cfg.threads,
    )
    return pl.Series("reason", reasons, dtype=pl.String), pl.Series("detail", details, dtype=pl.String)


def duplicates_of(
    texts: pl.Series, groups: pl.Series | None, exact: bool, threshold: float | None, cfg: CleanConfig
) -> tuple[pl.Series | None, tuple[pl.Series, pl.Series, pl.Series] | None]:
    """Both dedupe passes over one column, each text normalised once in Rust.

    Returns (index of the first text with the same normalised form within its
    group, or None without `exact`; near-duplicate (cluster representative,
    closest verified match, its Jaccard), or None without `threshold`). The
    near pass covers only the texts that are not exact duplicates, and its
    indices count those texts, in order.
    """
    first, near = ditto_native.duplicates(
        _arrow(texts),
        None if groups is None else _arrow(groups),
        exact=bool(exact),  # a check turned off in the config arrives as None
        threshold=threshold,
        num_threads=cfg.threads,
        **cfg.lsh_settings(),
    )
    first_s = None if first is None else pl.Series("first", first, dtype=pl.UInt32)
    if near is None:
        return first_s, None
    rep, partner, jaccard = near
    return first_s, (
        pl.Series("rep", rep, dtype=pl.UInt32),
        pl.Series("partner", partner, dtype=pl.UInt32),
        pl.Series("jaccard", jaccard, dtype=pl.Float32),
    )
