"""The report's metrics: per-turn values read from results files, summed per session.

Every metric is a pooled mean over counted turns (as the paper's scoring
script averages over all turns); a turn with no value (None) is not counted.

Judge-based:
- consistency: `consist_scores`;
- knowledge: `knowledge_scores` (1-10), turns with no parsed score left out;
- rejection: (`reject_scores` == `rejection_labels`), tied or unparsed votes left out.

Judge-free (from `flags`):
- assistant-leak rate and identity-break rate over all answered turns;
- refusal accuracy on contrastive turns (label 1): the share that refuse;
- refusal rate on role-specific turns (label 0): the share that refuse.
Files without the flags (for example the paper's own results) show n/a there.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ditto_native import DittoError

from data_tools.eval.records import EvalSession, session_from_record

PerTurn = Callable[[dict[str, Any], EvalSession], Sequence[float | None]]


@dataclasses.dataclass(frozen=True)
class Metric:
    key: str
    title: str
    kind: str  # "judge" or "judge-free"
    decimals: int
    per_turn: PerTurn


def _numbers(field: str) -> PerTurn:
    return lambda record, _: [None if v is None else float(v) for v in record[field]]


def _rejection(record: dict[str, Any], session: EvalSession) -> list[float | None]:
    return [None if p is None else float(p == label) for p, label in zip(record["reject_scores"], session.rejection_labels)]


def _flag(field: str, label: int | None = None) -> PerTurn:
    def per_turn(record: dict[str, Any], session: EvalSession) -> list[float | None]:
        flags = record.get(field)
        if flags is None:
            return []
        return [float(f) if label is None or lab == label else None for f, lab in zip(flags, session.rejection_labels)]

    return per_turn


METRICS: tuple[Metric, ...] = (
    Metric("consistency", "consistency", "judge", 3, _numbers("consist_scores")),
    Metric("knowledge", "knowledge (1-10)", "judge", 2, _numbers("knowledge_scores")),
    Metric("rejection", "rejection accuracy", "judge", 3, _rejection),
    Metric("leak", "assistant-leak rate", "judge-free", 3, _flag("leak_flags")),
    Metric("identity_break", "identity-break rate", "judge-free", 3, _flag("identity_break_flags")),
    Metric("refusal_contrastive", "refusal accuracy, contrastive turns", "judge-free", 3, _flag("refusal_flags", 1)),
    Metric("refusal_role_specific", "refusal rate, role-specific turns", "judge-free", 3, _flag("refusal_flags", 0)),
)

_SCORE_LISTS = ("consist_scores", "knowledge_scores", "reject_scores")
_FLAG_LISTS = ("leak_flags", "identity_break_flags", "refusal_flags")


@dataclasses.dataclass
class ResultsFile:
    """One `ditto-eval run` output: its sessions and, per metric, per-session (sum, count)."""

    path: Path
    model: str
    judge: str | None
    sessions: list[EvalSession]
    records: list[dict[str, Any]]
    sums: dict[str, np.ndarray]
    counts: dict[str, np.ndarray]

    @property
    def keys(self) -> list[str]:
        return [s.key for s in self.sessions]

    def langs(self) -> list[str]:
        return [s.lang for s in self.sessions]


def check_results_record(record: dict[str, Any], session: EvalSession, where: str) -> None:
    """The results fields: per-turn lists of the session's length; raises naming the line and field."""
    for field in _SCORE_LISTS:
        if record.get(field) is None:
            raise DittoError(f"{where}: missing field {field!r} (expected a results file from `ditto-eval run`)")
        values = record[field]
        if not isinstance(values, list) or len(values) != session.turns:
            raise DittoError(f"{where}: field {field!r} must be a list of {session.turns} values (one per prompt)")
        for v in values:
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                raise DittoError(f"{where}: field {field!r} holds {v!r}; expected numbers or null")
    if any(v not in (0, 1, None) for v in record["reject_scores"]):
        raise DittoError(f"{where}: field 'reject_scores' must hold 0, 1 or null")
    for field in _FLAG_LISTS:
        flags = record.get(field)
        if flags is not None and (not isinstance(flags, list) or len(flags) != session.turns or not all(isinstance(f, bool) for f in flags)):
            raise DittoError(f"{where}: field {field!r} must be a list of {session.turns} booleans")


def load_results(path: Path, rows: Sequence[tuple[int, dict[str, Any]]]) -> ResultsFile:
    sessions, records = [], []
    models, judges = set(), set()
    for line, record in rows:
        session = session_from_record(record, str(path), line)
        check_results_record(record, session, f"{path}: line {line}")
        sessions.append(session)
        records.append(record)
        models.add(record.get("model"))
        judges.add(record.get("judge"))
    if len(models) > 1:
        raise DittoError(f"{path}: records name different models ({', '.join(sorted(map(str, models)))}); one model per results file")
    model = models.pop() or path.stem
    judge = judges.pop() if len(judges) == 1 else ", ".join(sorted(map(str, judges)))
    sums, counts = {}, {}
    for metric in METRICS:
        s = np.zeros(len(sessions))
        c = np.zeros(len(sessions))
        for i, (record, session) in enumerate(zip(records, sessions)):
            counted = [v for v in metric.per_turn(record, session) if v is not None]
            s[i], c[i] = sum(counted), len(counted)
        sums[metric.key], counts[metric.key] = s, c
    return ResultsFile(path, str(model), judge, sessions, records, sums, counts)
