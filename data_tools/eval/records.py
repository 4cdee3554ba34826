"""Evaluation files: one JSON object per line, in the published WikiRoleEval layout.

A session has `system`, `prompts`, `role_consist_cands`, `rejection_labels`,
`evidence` and `meta` {`label`, `description`, `lang`, `summary`, ...}. The
official material carries the scoring fields both at top level and under
`meta`, so each field is looked up at top level first, then under `meta`.
Candidates are bare names ("Ada Lovelace") or "[Name] description"; evidence
per turn is a list of facts or one string (the official file's Markdown list).

Bad input stops with one line naming the file, the line and the field.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from ditto_native import DittoError, normalize_text

SCORING_FIELDS = ("role_consist_cands", "rejection_labels", "evidence")
# The official README spells this one with a space; its scripts use the underscore.
_ALIASES = {"rejection_labels": ("rejection_labels", "rejection labels")}
_BRACKETED = re.compile(r"^\s*\[([^\]]+)\]\s*(.*)$", re.DOTALL)


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One identity choice: `[Name] description` or a bare name."""

    name: str
    description: str

    @classmethod
    def parse(cls, text: str) -> Candidate:
        found = _BRACKETED.match(text)
        if found:
            return cls(found.group(1).strip(), found.group(2).strip())
        return cls(text.strip(), "")

    def render(self) -> str:
        return f"[{self.name}] {self.description}".rstrip() if self.description else self.name


@dataclasses.dataclass(frozen=True)
class EvalSession:
    """One session of an evaluation (or results) file, checked; `record` is the object as read."""

    line: int  # 1-based line in its file
    record: dict[str, Any]
    system: str
    prompts: tuple[str, ...]
    candidates: tuple[Candidate, ...]
    rejection_labels: tuple[int, ...]
    evidence: tuple[tuple[str, ...], ...]
    label: str
    description: str
    lang: str
    summary: str

    @property
    def key(self) -> str:
        """Identity of the session's content, stable across files: seeds and report pairing use it."""
        text = json.dumps([self.system, list(self.prompts)], ensure_ascii=False)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]

    @property
    def turns(self) -> int:
        return len(self.prompts)

    @property
    def true_candidate(self) -> Candidate:
        return next(c for c in self.candidates if same_name(c.name, self.label))


def same_name(a: str, b: str) -> bool:
    return a.strip() == b.strip() or normalize_text(a) == normalize_text(b)


def lookup(record: Mapping[str, Any], name: str) -> tuple[bool, Any]:
    """(found, value) of a field at top level, else under `meta`."""
    meta = record.get("meta") if isinstance(record.get("meta"), Mapping) else {}
    for place in (record, meta):
        for alias in _ALIASES.get(name, (name,)):
            if alias in place:
                return True, place[alias]
    return False, None


def read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DittoError(f"{path}: not UTF-8 text (expected JSON Lines)") from None
    rows = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise DittoError(f"{path}: line {n}: not valid JSON ({exc.msg})") from None
        if not isinstance(value, dict):
            raise DittoError(f"{path}: line {n}: expected a JSON object, got {type(value).__name__}")
        rows.append((n, value))
    return rows


def load_sessions(path: str | Path) -> list[EvalSession]:
    """Every session of an evaluation or results file, checked; raises DittoError on the first bad one."""
    rows = read_jsonl(path)
    if not rows:
        raise DittoError(f"{path}: no sessions")
    return [session_from_record(record, str(path), line) for line, record in rows]


def session_from_record(record: dict[str, Any], source: str, line: int) -> EvalSession:
    where = f"{source}: line {line}"

    def need(name: str) -> Any:
        found, value = lookup(record, name)
        if not found or value is None:
            raise DittoError(f"{where}: missing field {name!r} (looked at top level and under meta)")
        return value

    def bad(name: str, why: str) -> DittoError:
        return DittoError(f"{where}: field {name!r} {why}")

    system = need("system")
    if not isinstance(system, str):
        raise bad("system", "must be a string")
    prompts = need("prompts")
    if not isinstance(prompts, list) or not prompts or not all(isinstance(p, str) and p.strip() for p in prompts):
        raise bad("prompts", "must be a non-empty list of non-empty strings")
    turns = len(prompts)
    label = need("label")
    if not isinstance(label, str) or not label.strip():
        raise bad("label", "must be a non-empty string")
    lang = need("lang")
    if not isinstance(lang, str) or not lang.strip():
        raise bad("lang", "must be a non-empty string")
    description = lookup(record, "description")[1] or ""
    summary = lookup(record, "summary")[1] or ""
    if not isinstance(description, str) or not isinstance(summary, str):
        raise bad("description" if not isinstance(description, str) else "summary", "must be a string")

    cands = need("role_consist_cands")
    if not isinstance(cands, list) or len(cands) < 2 or not all(isinstance(c, str) and c.strip() for c in cands):
        raise bad("role_consist_cands", "must be a list of at least 2 non-empty strings")
    candidates = tuple(Candidate.parse(c) for c in cands)
    if not any(same_name(c.name, label) for c in candidates):
        raise bad("role_consist_cands", f"does not name the role {label!r}")
    if len({normalize_text(c.name) for c in candidates}) != len(candidates):
        raise bad("role_consist_cands", "names a candidate twice")

    labels = need("rejection_labels")
    if not isinstance(labels, list) or len(labels) != turns or not all(_is_binary(v) for v in labels):
        raise bad("rejection_labels", f"must be a list of {turns} values, each 0 or 1 (one per prompt)")

    evidence = need("evidence")
    if not isinstance(evidence, list) or len(evidence) != turns:
        raise bad("evidence", f"must be a list of {turns} entries (one per prompt)")
    facts = []
    for item in evidence:
        if item is None:
            facts.append(())
        elif isinstance(item, str):
            facts.append((item,) if item.strip() else ())
        elif isinstance(item, list) and all(isinstance(f, str) for f in item):
            facts.append(tuple(f for f in item if f.strip()))
        else:
            raise bad("evidence", "entries must be strings or lists of strings")

    return EvalSession(
        line=line, record=record, system=system, prompts=tuple(prompts), candidates=candidates,
        rejection_labels=tuple(int(v) for v in labels), evidence=tuple(facts), label=label.strip(),
        description=description.strip(), lang=lang.strip(), summary=summary.strip(),
    )


def _is_binary(value: Any) -> bool:
    return value in (0, 1) and not isinstance(value, float)


def write_jsonl_atomic(records: Iterable[Mapping[str, Any]], path: str | Path) -> None:
    """Readers see the old file or the whole new one, never a torn write (the project's one atomic writer)."""
    from ditto_jax.atomic_io import write_text_atomic

    write_text_atomic(path, "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records))
