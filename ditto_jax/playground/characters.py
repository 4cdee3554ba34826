"""The character table as the playground searches it.

Reads a characters.parquet (the DESIGN contract: character_id, lang, label,
description, aliases, sitelinks, ...) with polars; only the columns a search
shows are kept, so a table with full profiles stays small in memory. Each
character carries its system message, built by the one rule in ditto_native
that training data uses too.

    index = CharacterIndex.from_parquet("characters.parquet")
    index.search("newton", lang="en", limit=5)[0]["system"]  # 'You are Isaac Newton, English physicist...'
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import ditto_native
import polars as pl
from ditto_native import DittoError

REQUIRED_COLUMNS = ("character_id", "lang", "label")
MAX_RESULTS = 50  # a page of matches; the user narrows the query for more


@dataclasses.dataclass(frozen=True)
class Character:
    character_id: str
    lang: str
    label: str
    description: str
    aliases: tuple[str, ...]
    sitelinks: int

    @property
    def system(self) -> str:
        return ditto_native.system_message(self.label, self.description, self.lang)

    def to_json(self) -> dict:
        return {
            "character_id": self.character_id, "lang": self.lang, "label": self.label,
            "description": self.description, "aliases": list(self.aliases), "system": self.system,
        }


@dataclasses.dataclass(frozen=True)
class _Entry:
    character: Character
    label_key: str  # normalize_text(label): case-, width- and punctuation-folded
    alias_keys: tuple[str, ...]
    description_key: str


class CharacterIndex:
    """Search over label, aliases and description; best matches first."""

    def __init__(self, characters: list[Character]):
        norm = ditto_native.normalize_text
        self._entries = [
            _Entry(c, norm(c.label), tuple(norm(a) for a in c.aliases), norm(c.description)) for c in characters
        ]
        self.languages = sorted({c.lang for c in characters})

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def from_parquet(cls, path: str | Path) -> "CharacterIndex":
        return cls(read_characters(path))

    def search(self, query: str, *, lang: str | None = None, limit: int = 20) -> list[dict]:
        """Characters matching `query` (all of them for an empty query), as JSON-ready dicts.

        Matching folds case, width and punctuation (ditto_native.normalize_text).
        Rank: label or alias equal to the query, a label word starting with
        it, the label containing it, an alias containing it, the description
        containing it; within a rank, more sitelinks (popularity) first, then
        the label.
        """
        key = ditto_native.normalize_text(query)
        limit = max(1, min(limit, MAX_RESULTS))
        scored = []
        for entry in self._entries:
            if lang and entry.character.lang != lang:
                continue
            rank = _rank(key, entry)
            if rank is not None:
                scored.append((rank, -entry.character.sitelinks, entry.character.label, entry.character))
        scored.sort(key=lambda s: s[:3])
        return [s[3].to_json() for s in scored[:limit]]


def _rank(key: str, entry: _Entry) -> int | None:
    if not key:
        return 5
    if entry.label_key == key or key in entry.alias_keys:
        return 0
    if any(word.startswith(key) for word in entry.label_key.split(" ")):  # "newt" finds "Isaac Newton"
        return 1
    if key in entry.label_key:
        return 2
    if any(key in a for a in entry.alias_keys):
        return 3
    if key in entry.description_key:
        return 4
    return None


def read_characters(path: str | Path) -> list[Character]:
    """The rows of a characters.parquet; raises DittoError naming the file, row or column at fault."""
    path = Path(path)
    if not path.is_file():
        raise DittoError(f"{path}: no such characters file")
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises its own error types for a non-parquet file
        raise DittoError(f"{path}: not a readable parquet file ({' '.join(str(exc).split())})") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in schema]
    if missing:
        raise DittoError(f"{path}: missing column(s) {', '.join(missing)} (see the characters.parquet contract)")
    wanted = [c for c in (*REQUIRED_COLUMNS, "description", "aliases", "sitelinks") if c in schema]
    table = pl.read_parquet(path, columns=wanted)
    characters = []
    for i, row in enumerate(table.iter_rows(named=True)):
        for field in REQUIRED_COLUMNS:
            value = row.get(field)
            if not isinstance(value, str) or not value.strip():
                raise DittoError(f"{path}: row {i}: field {field} is empty")
        aliases = row.get("aliases") or []
        characters.append(
            Character(
                character_id=row["character_id"].strip(), lang=row["lang"].strip(), label=row["label"].strip(),
                description=(row.get("description") or "").strip(),
                aliases=tuple(a.strip() for a in aliases if isinstance(a, str) and a.strip()),
                sitelinks=int(row.get("sitelinks") or 0),
            )
        )
    return characters
