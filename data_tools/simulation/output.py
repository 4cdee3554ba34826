"""Atomic Parquet output: readers see the old file or the whole new one, never a torn write."""
from __future__ import annotations

from pathlib import Path

import polars as pl

from ditto_jax.atomic_io import atomic_path


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        frame.write_parquet(tmp)
