"""The dialogues contract (see DESIGN.md, Contracts): column types and checks.

A table that breaks the contract is bad input: the stage stops with one line
naming the file, the column and, for a row-level fault, the row and session.
"""
from __future__ import annotations

from pathlib import Path

import polars as pl
from ditto_native import DittoError

MESSAGE = pl.Struct({"role": pl.String, "content": pl.String})

DIALOGUES_SCHEMA: dict[str, pl.DataType] = {
    "session_id": pl.String(),
    "character_id": pl.String(),
    "lang": pl.String(),
    "system": pl.String(),
    "messages": pl.List(MESSAGE),
    "turn_types": pl.List(pl.String),
    "rejection_labels": pl.List(pl.Int8),
    "question_sources": pl.List(pl.String),
    "evidence": pl.List(pl.List(pl.String)),
    "finish_reasons": pl.List(pl.String),
    "simulator": pl.String(),
    "seed": pl.Int64(),
}

# One entry per turn in each of these (the contract's per-turn lists).
PER_TURN_COLUMNS = ("turn_types", "rejection_labels", "question_sources", "evidence", "finish_reasons")

# Per-turn columns a table may lack: absent means unknown, and nothing is dropped for it.
OPTIONAL_PER_TURN: dict[str, pl.DataType] = {
    "pairings": pl.List(pl.String),  # contrastive: paired | fallback; role-specific: null
}
PAIRINGS = ("paired", "fallback")


def per_turn_columns(df: pl.DataFrame) -> tuple[str, ...]:
    """The per-turn list columns `df` has: the contract's, then the optional ones present."""
    return (*PER_TURN_COLUMNS, *(c for c in OPTIONAL_PER_TURN if c in df.columns))

QUARANTINE_COLUMNS: dict[str, pl.DataType] = {
    "reason": pl.String(),
    "detail": pl.String(),
    "level": pl.String(),
    "turn_index": pl.Int32(),
}


def _compatible(actual: pl.DataType, expected: pl.DataType) -> bool:
    """Same shape; any integer width stands in for the contract's integers."""
    if expected.is_integer():
        return actual.is_integer() or actual == pl.Null
    if isinstance(expected, pl.List):
        return isinstance(actual, pl.List) and _compatible(actual.inner, expected.inner)
    if isinstance(expected, pl.Struct):
        if not isinstance(actual, pl.Struct):
            return False
        have = {f.name: f.dtype for f in actual.fields}
        return all(f.name in have and _compatible(have[f.name], f.dtype) for f in expected.fields)
    return actual == expected or actual == pl.Null


def conform(df: pl.DataFrame, source: str) -> pl.DataFrame:
    """Checks the columns and casts them to the contract's exact types.

    Extra columns pass through untouched.
    """
    for name, expected in DIALOGUES_SCHEMA.items():
        if name not in df.columns:
            raise DittoError(f"{source}: missing column {name!r}")
        if not _compatible(df.schema[name], expected):
            raise DittoError(f"{source}: column {name!r} has type {df.schema[name]}, expected {expected}")
    casts = [pl.col("messages").list.eval(pl.struct(pl.element().struct.field("role"), pl.element().struct.field("content")))]
    casts += [pl.col(n).cast(t) for n, t in DIALOGUES_SCHEMA.items() if n != "messages"]
    expected = dict(DIALOGUES_SCHEMA)
    for name, dtype in OPTIONAL_PER_TURN.items():
        if name in df.columns:
            if not _compatible(df.schema[name], dtype):
                raise DittoError(f"{source}: column {name!r} has type {df.schema[name]}, expected {dtype}")
            casts.append(pl.col(name).cast(dtype))
            expected[name] = dtype
    for expr in casts:
        name = expr.meta.output_name()
        try:
            df = df.with_columns(expr)
        except pl.exceptions.PolarsError as exc:  # e.g. a label of 300 does not fit int8
            raise DittoError(f"{source}: column {name!r} does not fit {expected[name]}: {str(exc).splitlines()[0]}") from None
    return df


def check_rows(df: pl.DataFrame, source: str) -> None:
    """Row-level contract: alternating user/assistant messages starting with
    user, whole turns, and one per-turn entry per turn. Raises on the first
    broken row."""

    def fail(mask: pl.Series, what: str) -> None:
        bad = mask.fill_null(True).arg_true()
        if len(bad):
            row = int(bad[0])
            raise DittoError(f"{source}: row {row} (session_id {df['session_id'][row]!r}): {what}")

    for col in ("session_id", "character_id", "lang", "system", "messages", *per_turn_columns(df)):
        fail(df[col].is_null(), f"column {col!r} is null")
    n_msgs = df["messages"].list.len()
    fail(n_msgs % 2 != 0, "column 'messages' does not hold whole turns (odd message count)")
    roles = df.select(
        pl.col("messages")
        .list.eval(
            pl.element().struct.field("role")
            == pl.when(pl.int_range(pl.len()) % 2 == 0).then(pl.lit("user")).otherwise(pl.lit("assistant"))
        )
        .list.all()
        .alias("ok")
    )["ok"]
    fail(~roles, "column 'messages' must alternate user/assistant, starting with user")
    for col in per_turn_columns(df):
        fail(df[col].list.len() != n_msgs // 2, f"column {col!r} needs one entry per turn")
    if "pairings" in df.columns:
        allowed = pl.element().is_null() | pl.element().is_in(PAIRINGS)
        bad = df.select(pl.col("pairings").list.eval(allowed).list.all().alias("ok"))["ok"]
        fail(~bad, f"column 'pairings' holds a value other than {', '.join(PAIRINGS)} or null")


def read_dialogues(path: str | Path) -> pl.DataFrame:
    """Reads and validates a dialogues parquet file."""
    path = Path(path)
    if not path.is_file():
        raise DittoError(f"{path}: no such file")
    try:
        df = pl.read_parquet(path)
    except Exception as exc:  # polars raises several types for a bad file
        raise DittoError(f"{path}: not a readable parquet file ({type(exc).__name__})") from None
    df = conform(df, str(path))
    check_rows(df, str(path))
    return df
