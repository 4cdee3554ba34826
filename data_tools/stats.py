"""`ditto-data stats FILE|DIR`: summarise any stage's output.

Recognises each file by its columns (the contracts in DESIGN.md):

- characters.parquet: rows, languages, categories, sitelinks;
- dialogues / clean.parquet: rows, languages, turns, turn types, rejection labels;
- quarantine.parquet: the same plus drop reasons and levels;
- a shard folder (manifest.json + train/ + heldout/) or one shard file:
  rows, segments, real/padded/loss tokens, packing efficiency, segment lengths.

A folder without a manifest (a `build` output) is summarised file by file.

    ditto-data stats shards/
    ditto-data stats clean.parquet --json
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from ditto_native import DittoError


def _counts(frame: pl.DataFrame, column: str) -> dict[str, int]:
    if column not in frame.columns:
        return {}
    vc = frame.get_column(column).fill_null("(null)").cast(pl.String).value_counts(sort=True)
    return {str(k): int(v) for k, v in zip(vc.get_column(column), vc.get_column("count"))}


def _describe(series: pl.Series) -> dict[str, float]:
    if series.len() == 0:
        return {"min": 0, "mean": 0.0, "median": 0.0, "max": 0}
    return {
        "min": int(series.min()),
        "mean": round(float(series.mean()), 2),
        "median": float(series.median()),
        "max": int(series.max()),
    }


def characters_stats(frame: pl.DataFrame) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "characters", "rows": frame.height, "languages": _counts(frame, "lang"), "categories": _counts(frame, "category")}
    if "sitelinks" in frame.columns:
        out["sitelinks"] = _describe(frame.get_column("sitelinks").drop_nulls())
    if "profile" in frame.columns:
        out["profile_chars"] = _describe(frame.get_column("profile").fill_null("").str.len_chars())
    return out


def dialogues_stats(frame: pl.DataFrame) -> dict[str, Any]:
    kind = "quarantine" if "reason" in frame.columns else "dialogues"
    turns = frame.get_column("messages").list.len() // 2
    out: dict[str, Any] = {
        "kind": kind,
        "rows": frame.height,
        "languages": _counts(frame, "lang"),
        "turns": {"total": int(turns.sum()), **_describe(turns)},
    }
    if "turn_types" in frame.columns:
        out["turn_types"] = _counts(frame.select(pl.col("turn_types").explode()), "turn_types")
    if "rejection_labels" in frame.columns:
        labels = frame.get_column("rejection_labels").explode().drop_nulls()
        out["rejection_rate"] = round(float(labels.mean()), 4) if labels.len() else 0.0
    if "finish_reasons" in frame.columns:
        out["finish_reasons"] = _counts(frame.select(pl.col("finish_reasons").explode()), "finish_reasons")
    if kind == "quarantine":
        out["drop_reasons"] = _counts(frame, "reason")
        out["levels"] = _counts(frame, "level")
    chars = frame.select(pl.col("messages").explode().struct.field("content").str.len_chars()).to_series()
    out["message_chars"] = _describe(chars.drop_nulls())
    return out


def _matrix(frame: pl.DataFrame, column: str) -> np.ndarray:
    """A shard column as [rows, seq_len] (fixed-size lists, or equal-length lists)."""
    series = frame.get_column(column)
    if isinstance(series.dtype, pl.Array):
        return series.to_numpy().reshape(frame.height, -1)
    return series.explode().to_numpy().reshape(frame.height, -1)


def shard_stats(frame: pl.DataFrame) -> dict[str, Any]:
    """Token and packing statistics of packed rows."""
    seg = _matrix(frame, "segment_ids").astype(np.int64)
    loss = _matrix(frame, "loss_mask")
    rows, seq_len = seg.shape if seg.ndim == 2 else (0, 0)
    real = seg > 0
    # One key per (row, segment): count tokens per key, keep the non-empty ones.
    keys = (np.arange(rows)[:, None] * (int(seg.max(initial=0)) + 1) + seg)[real]
    lengths = np.bincount(keys)
    lengths = lengths[lengths > 0]
    capacity = rows * seq_len
    return {
        "rows": rows,
        "seq_len": seq_len,
        "num_segments": int(lengths.size),
        "real_tokens": int(real.sum()),
        "padded_tokens": int(capacity - real.sum()),
        "loss_tokens": int(loss.sum()),
        "packing_efficiency": round(float(real.sum()) / capacity, 4) if capacity else 0.0,
        "segment_tokens": _describe(pl.Series(lengths, dtype=pl.Int64)),
        "segments_per_row": round(lengths.size / rows, 2) if rows else 0.0,
    }


def _read(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.ComputeError, OSError) as exc:
        raise DittoError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None


def file_stats(path: Path) -> dict[str, Any]:
    frame = _read(path)
    cols = set(frame.columns)
    if {"input_ids", "segment_ids", "loss_mask"} <= cols:
        return {"kind": "shard", **shard_stats(frame)}
    if "messages" in cols:
        return dialogues_stats(frame)
    if {"character_id", "category"} <= cols:
        return characters_stats(frame)
    raise DittoError(f"{path}: unrecognised columns {sorted(cols)} (not characters, dialogues or shards)")


def shards_dir_stats(folder: Path) -> dict[str, Any]:
    manifest_path = folder / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DittoError(f"{manifest_path}: not JSON ({exc.msg} at line {exc.lineno})") from None
    out: dict[str, Any] = {
        "kind": "shards",
        "seq_len": manifest.get("seq_len"),
        "tokenizer": manifest.get("tokenizer", {}).get("name"),
        "system_policy": manifest.get("system_policy"),
        "dropped": manifest.get("dropped", {}),
        "truncated": manifest.get("truncated"),
    }
    for split in ("train", "heldout"):
        files = sorted((folder / split).glob("*.parquet"))
        if not files:
            raise DittoError(f"{folder / split}: no shard files")
        out[split] = shard_stats(pl.concat([_read(f) for f in files]))
    return out


def summarize(path: str | Path) -> dict[str, Any]:
    """Statistics of a stage output: one file, a shard folder, or a folder of outputs."""
    path = Path(path)
    if path.is_file():
        return file_stats(path)
    if (path / "manifest.json").is_file():
        return shards_dir_stats(path)
    if path.is_dir():
        parts = {p.name: summarize(p) for p in sorted(path.iterdir()) if p.suffix == ".parquet" or (p / "manifest.json").is_file()}
        if not parts:
            raise DittoError(f"{path}: no stage outputs (Parquet files or shard folders) found")
        return {"kind": "folder", "contents": parts}
    raise FileNotFoundError(f"{path}: no such file or folder")


def format_summary(stats: dict[str, Any], indent: int = 0) -> str:
    """Readable nested `key: value` lines."""
    pad = "  " * indent
    lines = []
    for key, value in stats.items():
        if isinstance(value, dict) and not value:
            lines.append(f"{pad}{key}: none")
        elif isinstance(value, dict):
            if all(not isinstance(v, dict) for v in value.values()) and len(value) <= 8:
                inner = ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
                lines.append(f"{pad}{key}: {inner}")
            else:
                lines.append(f"{pad}{key}:")
                lines.append(format_summary(value, indent + 1))
        else:
            lines.append(f"{pad}{key}: {_fmt(value)}")
    return "\n".join(line for line in lines if line)


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _run(args: argparse.Namespace) -> int:
    stats = summarize(args.path)
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else format_summary(stats))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "stats",
        help="summarise a stage output (characters, dialogues, clean/quarantine, shards)",
        description="Summarise any stage's output: rows, languages, categories, turns, drop reasons, and token and packing statistics.",
    )
    p.add_argument("path", metavar="FILE|DIR", help="a Parquet output, a shard folder, or a folder of outputs")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(func=_run)

