"""The clean stage's JSON report: counts per reason and a few examples each."""
from __future__ import annotations

import dataclasses

import polars as pl

from data_tools.cleaning.config import CleanConfig
from data_tools.cleaning.stats import CleanStats

_EXCERPT = 200  # characters of question / answer shown per example


def examples(quarantine: pl.DataFrame, per_reason: int) -> dict[str, list[dict[str, object]]]:
    """The first `per_reason` quarantine rows of each reason, shortened."""
    if per_reason <= 0 or quarantine.height == 0:
        return {}
    first = quarantine.group_by("reason", maintain_order=True).head(per_reason)
    rows = first.select(
        "reason",
        "session_id",
        "level",
        "turn_index",
        "detail",
        pl.col("messages").list.first().struct.field("content").str.slice(0, _EXCERPT).alias("question"),
        pl.col("messages").list.get(1, null_on_oob=True).struct.field("content").str.slice(0, _EXCERPT).alias("answer"),
    ).to_dicts()
    out: dict[str, list[dict[str, object]]] = {}
    for row in rows:
        out.setdefault(str(row.pop("reason")), []).append(row)
    return out


def build_report(stats: CleanStats, quarantine: pl.DataFrame, cfg: CleanConfig, inputs: dict[str, str]) -> dict[str, object]:
    return {
        **stats.to_dict(),
        "examples": examples(quarantine, cfg.report_examples),
        "files": inputs,
        "config": dataclasses.asdict(cfg),
    }
