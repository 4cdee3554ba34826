"""The dialogues.parquet contract (see DESIGN.md, Contracts): one row per session."""
from __future__ import annotations

import polars as pl

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})

DIALOGUE_SCHEMA = pl.Schema(
    {
        "session_id": pl.String,  # deterministic from (character_id, lang, seed)
        "character_id": pl.String,
        "lang": pl.String,
        "system": pl.String,  # "You are {label}, {description}" / "你是{label}，{description}"
        "messages": pl.List(MESSAGE),  # user/assistant alternating, starting with user
        "turn_types": pl.List(pl.String),  # role_specific | contrastive, one per turn
        "rejection_labels": pl.List(pl.Int8),  # 1 = beyond the role's knowledge
        "question_sources": pl.List(pl.String),  # character_id the question was written for
        "evidence": pl.List(pl.List(pl.String)),  # supporting profile facts; empty for contrastive turns
        "finish_reasons": pl.List(pl.String),  # stop | length | length_trimmed | ...
        "pairings": pl.List(pl.String),  # contrastive: paired | fallback; role-specific: null
        "simulator": pl.String,
        "seed": pl.Int64,
    }
)

TURN_TYPES = ("role_specific", "contrastive")
PAIRINGS = ("paired", "fallback")
