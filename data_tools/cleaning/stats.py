"""Counts of the clean stage: sessions and turns in, kept and quarantined,
per reason. Counters add up (`+`), so shards of a corpus merge into one report."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import polars as pl

from data_tools.cleaning.reasons import REASON_CODES


@dataclass
class CleanStats:
    sessions_in: int = 0
    turns_in: int = 0
    sessions_clean: int = 0
    turns_clean: int = 0
    sessions_quarantined: int = 0  # quarantined whole
    turns_quarantined: int = 0  # in any quarantine row, whole sessions included
    # reason -> rows at that level; reason -> turns those rows hold
    session_rows: Counter[str] = field(default_factory=Counter)
    turn_rows: Counter[str] = field(default_factory=Counter)
    turns_by_reason: Counter[str] = field(default_factory=Counter)

    @classmethod
    def from_frames(cls, sessions_in: int, turns_in: int, clean: pl.DataFrame, quarantine: pl.DataFrame) -> CleanStats:
        q = quarantine.select("reason", "level", (pl.col("messages").list.len() // 2).alias("turns"))
        per = q.group_by("reason", "level").agg(pl.len().alias("rows"), pl.col("turns").sum()).to_dicts()
        s = cls(
            sessions_in=sessions_in,
            turns_in=turns_in,
            sessions_clean=clean.height,
            turns_clean=int((clean["messages"].list.len() // 2).sum()) if clean.height else 0,
            sessions_quarantined=int((q["level"] == "session").sum()),
            turns_quarantined=int(q["turns"].sum()) if q.height else 0,
        )
        for row in per:
            (s.session_rows if row["level"] == "session" else s.turn_rows)[row["reason"]] += row["rows"]
            s.turns_by_reason[row["reason"]] += int(row["turns"])
        return s

    def __add__(self, other: CleanStats) -> CleanStats:
        return CleanStats(
            *(getattr(self, f) + getattr(other, f) for f in (
                "sessions_in", "turns_in", "sessions_clean", "turns_clean", "sessions_quarantined", "turns_quarantined",
            )),
            session_rows=self.session_rows + other.session_rows,
            turn_rows=self.turn_rows + other.turn_rows,
            turns_by_reason=self.turns_by_reason + other.turns_by_reason,
        )

    def check_conservation(self) -> None:
        """sessions in = clean + quarantined whole; turns in = clean + quarantined."""
        if self.sessions_in != self.sessions_clean + self.sessions_quarantined:
            raise AssertionError(
                f"session conservation broken: {self.sessions_in} in != "
                f"{self.sessions_clean} clean + {self.sessions_quarantined} quarantined"
            )
        if self.turns_in != self.turns_clean + self.turns_quarantined:
            raise AssertionError(
                f"turn conservation broken: {self.turns_in} in != {self.turns_clean} clean + {self.turns_quarantined} quarantined"
            )
        unknown = set(self.turns_by_reason) - set(REASON_CODES)
        if unknown:
            raise AssertionError(f"unknown reason codes {sorted(unknown)}")

    def to_dict(self) -> dict[str, object]:
        return {
            "sessions": {"in": self.sessions_in, "clean": self.sessions_clean, "quarantined": self.sessions_quarantined},
            "turns": {"in": self.turns_in, "clean": self.turns_clean, "quarantined": self.turns_quarantined},
            "reasons": {
                r: {"session_rows": self.session_rows[r], "turn_rows": self.turn_rows[r], "turns": self.turns_by_reason[r]}
                for r in REASON_CODES
                if self.turns_by_reason[r] or self.session_rows[r] or self.turn_rows[r]
            },
        }

    def summary(self) -> str:
        lines = [
            f"sessions: {self.sessions_in} in, {self.sessions_clean} clean, {self.sessions_quarantined} quarantined whole",
            f"turns:    {self.turns_in} in, {self.turns_clean} clean, {self.turns_quarantined} quarantined",
        ]
        for r, c in self.to_dict()["reasons"].items():  # type: ignore[union-attr]
            lines.append(f"  {r:<18} {c['session_rows']:>7} sessions {c['turn_rows']:>7} turn rows {c['turns']:>8} turns")
        return "\n".join(lines)
