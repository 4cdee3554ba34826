"""Percentile bootstrap over sessions, for pooled per-turn means.

A metric is a mean over turns, but turns of one session are not independent
(same role, same model state), so the resampling unit is the session: each
of B resamples draws n sessions with replacement and pools their turns.

Reproducible by construction, so a reader can recompute any interval:
- the indices for a split are `numpy.random.default_rng([seed, zlib.crc32(split)])
  .integers(0, n, size=(B, n))`, where n is the split's session count;
- a resample's value is sum(per-session sums) / sum(per-session counts),
  and resamples with no counted turn are left out;
- the interval is numpy.percentile of the remaining values at 2.5 and 97.5.

The indices depend only on (seed, split, n), so two models scored on the same
sessions get the same resamples: their difference is a paired bootstrap.
"""
from __future__ import annotations

import zlib

import numpy as np

RESAMPLES = 1000
LEVEL = 0.95


def resample_indices(n: int, split: str, *, seed: int = 0, resamples: int = RESAMPLES) -> np.ndarray:
    """(resamples, n) session indices for one split."""
    rng = np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])
    return rng.integers(0, n, size=(resamples, n))


def pooled(sums: np.ndarray, counts: np.ndarray) -> float | None:
    """The point estimate: sum of sums over sum of counts; None when nothing was counted."""
    total = float(counts.sum())
    return float(sums.sum()) / total if total > 0 else None


def resampled(sums: np.ndarray, counts: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """One pooled value per resample (NaN where a resample counted nothing)."""
    s = sums[idx].sum(axis=1)
    c = counts[idx].sum(axis=1)
    out = np.full(len(idx), np.nan)
    np.divide(s, c, out=out, where=c > 0)
    return out


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """Percentile interval of the finite values; None when there are none."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return None
    tail = (1 - level) / 2 * 100
    lo, hi = np.percentile(finite, [tail, 100 - tail])
    return float(lo), float(hi)
