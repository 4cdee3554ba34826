"""The clean stage: role-play quality checks and dedupe over dialogues.

Order of work (each step sees only what the steps before it kept):
1. turn checks in Rust (empty, truncated, length, script, leak, identity,
   repetition, label), first failure wins; then prompt_echo (Polars);
2. exact, then near-duplicate questions within one character_id;
3. fallback-paired contrastive turns, while enough other turns remain;
4. the turn policy: drop the failed turns while at least `min_turns` remain,
   else quarantine the whole session (or always, with `drop_session`);
5. exact, then near-duplicate sessions over the text of their kept turns.
Duplicates keep their first (lowest-row) member, so the kept copy is always
one that passed every check. Nothing is lost: every dropped session or turn is
a quarantine row, and conservation is checked before returning.
"""
from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from data_tools.cleaning import native
from data_tools.cleaning.config import CleanConfig
from data_tools.cleaning.echo import builtin_phrases, echo_detail, normalise
from data_tools.cleaning.reasons import LABEL_MISMATCH, PROMPT_ECHO
from data_tools.cleaning.schema import QUARANTINE_COLUMNS, per_turn_columns
from data_tools.cleaning.stats import CleanStats

_NO_FAILURE = (pl.lit(None, pl.String).alias("reason"), pl.lit(None, pl.String).alias("detail"))


@dataclass(frozen=True)
class CleanResult:
    clean: pl.DataFrame
    quarantine: pl.DataFrame
    stats: CleanStats


def _explode_turns(sessions: pl.DataFrame, per_turn: tuple[str, ...]) -> pl.DataFrame:
    """One row per turn: its user and assistant message structs, texts and
    per-turn list entries, with the session row `_sid` and turn index `_turn`."""
    with_turns = sessions.filter(pl.col("_n") > 0)
    return (
        with_turns.select(
            "_sid",
            "session_id",
            "_group",
            pl.int_ranges(0, pl.col("_n"), dtype=pl.Int32).alias("_turn"),
            pl.col("messages").list.gather_every(2, 0).alias("_q"),
            pl.col("messages").list.gather_every(2, 1).alias("_a"),
            *per_turn,
        )
        .explode(["_turn", "_q", "_a", *per_turn])
        .with_columns(
            pl.col("_q").struct.field("content").fill_null("").alias("question"),
            pl.col("_a").struct.field("content").fill_null("").alias("answer"),
        )
    )


def _scatter(turns: pl.DataFrame, positions: pl.Series, reason: str, details: pl.Series) -> pl.DataFrame:
    """Sets reason/detail of the turns at `positions` (row numbers)."""
    if positions.len() == 0:
        return turns
    return turns.with_columns(
        turns["reason"].scatter(positions, reason),
        turns["detail"].scatter(positions, details),
    )


def _prompt_echo(turns: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """Marks passing turns whose question, answer or evidence repeats prompt scaffolding."""
    if not cfg.prompt_echo:
        return turns
    phrases = tuple(sorted({*builtin_phrases(), *(normalise(p) for p in cfg.echo_phrases if p.strip())}))
    ok = turns.with_row_index("_pos").filter(pl.col("reason").is_null())
    if not ok.height:
        return turns
    detail = echo_detail(ok, phrases)
    hit = detail.is_not_null()
    return _scatter(turns, ok["_pos"].filter(hit), PROMPT_ECHO, detail.filter(hit))


def _fallback_turns(turns: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """Marks passing fallback-paired turns of sessions that keep `min_turns` other passing turns."""
    if not cfg.drop_fallback_turns or "pairings" not in turns.columns:
        return turns
    ok = turns.with_row_index("_pos").filter(pl.col("reason").is_null())
    fallback = pl.col("pairings") == "fallback"
    others_left = (pl.len() - fallback.sum()).over("_sid")
    drop = ok.filter(fallback & (others_left >= cfg.min_turns))
    details = pl.Series(
        ["fallback pairing: the question was not written with this role as the partner, so its label is unjudged"] * drop.height,
        dtype=pl.String,
    )
    return _scatter(turns, drop["_pos"], LABEL_MISMATCH, details)


def _dedupe_questions(turns: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """Marks repeated questions of one character among the turns still passing."""
    ok = turns.with_row_index("_pos").filter(pl.col("reason").is_null())
    exact, near = cfg.exact_dedupe_questions, cfg.question_near_dup_threshold
    first, near = native.duplicates_of(ok["question"], ok["_group"], exact, near, cfg) if ok.height else (None, None)
    if first is not None:
        dup = first != pl.int_range(ok.height, eager=True, dtype=pl.UInt32)
        src = ok[first.filter(dup)]
        details = pl.format("question repeats session {} turn {}", src["session_id"], src["_turn"])
        turns = _scatter(turns, ok["_pos"].filter(dup), "exact_duplicate", pl.select(details).to_series())
        ok = ok.filter(~dup)
    if near is not None and ok.height:
        rep, partner, jac = near
        dup = rep != pl.int_range(ok.height, eager=True, dtype=pl.UInt32)
        src = ok[partner.filter(dup)]
        details = pl.select(
            pl.format(
                "question near-duplicate of session {} turn {} (jaccard {})",
                src["session_id"],
                src["_turn"],
                jac.filter(dup).round(3),
            )
        ).to_series()
        turns = _scatter(turns, ok["_pos"].filter(dup), "near_duplicate", details)
    return turns


def _whole_session_drops(sessions: pl.DataFrame, turns: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """`_sid`, reason, detail of sessions the turn policy quarantines whole."""
    failed = (
        turns.filter(pl.col("reason").is_not_null())
        .sort("_sid", "_turn")
        .group_by("_sid", maintain_order=True)
        .agg(
            pl.col("reason").first().alias("_first"),
            pl.len().alias("_failed"),
            pl.format("turn {} {}: {}", "_turn", "reason", "detail").str.join("; ").alias("_summary"),
        )
    )
    v = sessions.select("_sid", "_n").join(failed, on="_sid", how="left").with_columns(pl.col("_failed").fill_null(0))
    left = pl.col("_n") - pl.col("_failed")
    if cfg.turn_failure == "drop_session":
        whole, why = pl.col("_failed") > 0, pl.lit("turn_failure is drop_session")
    else:
        whole = (pl.col("_failed") > 0) & (left < cfg.min_turns)
        why = pl.format("{} of {} turns left < min_turns {}", left, "_n", pl.lit(cfg.min_turns))
    return v.filter((pl.col("_n") == 0) | whole).select(
        "_sid",
        pl.when(pl.col("_n") == 0).then(pl.lit("empty_turn")).otherwise("_first").alias("reason"),
        pl.when(pl.col("_n") == 0)
        .then(pl.lit("session has no turns"))
        .otherwise(pl.format("{}; {}", why, "_summary"))
        .alias("detail"),
    )


def _rebuild(sessions: pl.DataFrame, turns: pl.DataFrame, key: list[str]) -> pl.DataFrame:
    """Sessions holding only the given turns, grouped by `key`: messages and
    every per-turn list are rebuilt together, so they stay aligned."""
    per_turn = per_turn_columns(sessions)
    session_cols = [c for c in sessions.columns if c not in ("messages", *per_turn)]
    extra = [pl.col(c).first() for c in ("reason", "detail") if c in turns.columns and key != ["_sid"]]
    agg = turns.group_by(key, maintain_order=True).agg(
        pl.concat_list("_q", "_a").list.explode(keep_nulls=False, empty_as_null=False).alias("messages"),
        *[pl.col(c) for c in per_turn],
        *extra,
    )
    return sessions.select(session_cols).join(agg, on="_sid", how="inner")


def _dedupe_sessions(rebuilt: pl.DataFrame, cfg: CleanConfig) -> pl.DataFrame:
    """`_sid`, reason, detail of sessions repeating an earlier kept session."""
    found: list[pl.DataFrame] = []
    ok = rebuilt.select(
        "_sid",
        "session_id",
        pl.col("messages").list.eval(pl.element().struct.field("content")).list.join("\n").alias("_text"),
    )
    exact, near = cfg.exact_dedupe_sessions, cfg.session_near_dup_threshold
    first, near = native.duplicates_of(ok["_text"], None, exact, near, cfg) if ok.height else (None, None)
    if first is not None:
        dup = first != pl.int_range(ok.height, eager=True, dtype=pl.UInt32)
        src = ok[first.filter(dup)]
        found.append(
            pl.DataFrame({"_sid": ok["_sid"].filter(dup)}).with_columns(
                pl.lit("exact_duplicate").alias("reason"),
                pl.format("session repeats session {}", src["session_id"]).alias("detail"),
            )
        )
        ok = ok.filter(~dup)
    if near is not None and ok.height:
        rep, partner, jac = near
        dup = rep != pl.int_range(ok.height, eager=True, dtype=pl.UInt32)
        src, rsrc = ok[partner.filter(dup)], ok[rep.filter(dup)]
        found.append(
            pl.DataFrame({"_sid": ok["_sid"].filter(dup)}).with_columns(
                pl.lit("near_duplicate").alias("reason"),
                pl.format(
                    "session near-duplicate of session {} (cluster of session {}; jaccard {})",
                    src["session_id"],
                    rsrc["session_id"],
                    jac.filter(dup).round(3),
                ).alias("detail"),
            )
        )
    schema = {"_sid": pl.UInt32, "reason": pl.String, "detail": pl.String}
    return pl.concat([f.cast(schema) for f in found]) if found else pl.DataFrame(schema=schema)


def _with_quarantine_columns(df: pl.DataFrame, level: str, turn_index: pl.Expr) -> pl.DataFrame:
    return df.with_columns(pl.lit(level).alias("level"), turn_index.cast(pl.Int32).alias("turn_index"))


def _turn_count(df: pl.DataFrame) -> int:
    return int((df["messages"].list.len() // 2).sum()) if df.height else 0


def clean_dialogues(df: pl.DataFrame, cfg: CleanConfig | None = None) -> CleanResult:
    """Splits a validated dialogues table into clean sessions and quarantine.

    `df` follows the dialogues contract (see `schema.conform`). Returns the
    clean table (same columns), the quarantine (same columns plus reason,
    detail, level, turn_index) and counts. Example:

        result = clean_dialogues(read_dialogues("dialogues.parquet"))
        result.stats.by_reason  # {"truncated": {"sessions": 0, "turns": 3}, ...}
    """
    cfg = cfg or CleanConfig()
    columns = df.columns
    sessions = df.with_row_index("_sid").with_columns(
        (pl.col("messages").list.len() // 2).cast(pl.Int32).alias("_n"),
        pl.col("character_id").rank("dense").cast(pl.UInt32).alias("_group"),
    )
    turns = _explode_turns(sessions, per_turn_columns(df))
    if turns.height:
        reason, detail = native.check_turns(turns, sessions, cfg)
        turns = turns.with_columns(reason, detail)
    else:
        turns = turns.with_columns(*_NO_FAILURE)
    turns = _prompt_echo(turns, cfg)
    turns = _dedupe_questions(turns, cfg)
    turns = _fallback_turns(turns, cfg)

    whole = _whole_session_drops(sessions, turns, cfg)
    survivors = turns.filter(~pl.col("_sid").is_in(whole["_sid"].implode()))
    kept = survivors.filter(pl.col("reason").is_null())
    rebuilt = _rebuild(sessions, kept, ["_sid"])
    dups = _dedupe_sessions(rebuilt, cfg)

    out_cols = [*columns, *QUARANTINE_COLUMNS]
    clean = rebuilt.filter(~pl.col("_sid").is_in(dups["_sid"].implode())).sort("_sid").select(columns)
    parts = [
        _with_quarantine_columns(sessions.join(whole, on="_sid"), "session", pl.lit(None)),
        _with_quarantine_columns(rebuilt.join(dups, on="_sid"), "session", pl.lit(None)),
        _with_quarantine_columns(
            _rebuild(sessions, survivors.filter(pl.col("reason").is_not_null()), ["_sid", "_turn"]),
            "turn",
            pl.col("_turn"),
        ),
    ]
    quarantine = (
        pl.concat([p.select("_sid", *out_cols) for p in parts])
        .sort("_sid", "turn_index", nulls_last=False)
        .select(out_cols)
    )
    stats = CleanStats.from_frames(df.height, _turn_count(df), clean, quarantine)
    stats.check_conservation()
    return CleanResult(clean=clean, quarantine=quarantine, stats=stats)
