"""Characters as the simulation sees them: one Role per characters.parquet row.

Besides what the prompts show (label, description, profile, facts), a role
carries rough features used to pick contrasting partners: its category, an
era (a year from its dated claims) and a domain (occupations, works, fields).
"""
from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable, Sequence

import ditto_native
import polars as pl
from ditto_native import DittoError

REQUIRED_COLUMNS = ("character_id", "lang", "label")
MAX_FACTS = 40  # claims shown in a prompt: enough for the key facts, bounded for long items

# Claim properties that date a character, most telling first (English and Chinese labels).
_ERA_PROPERTIES = ("date of birth", "出生日期", "floruit", "活跃时期", "date of death", "逝世日期", "publication date", "出版日期", "inception", "成立或建立年份")
# Claim properties that place a character in a field or a fictional world.
_DOMAIN_PROPERTIES = frozenset({
    "occupation", "职业", "present in work", "登场作品", "from narrative universe", "虚构宇宙", "所属虚构世界",
    "field of work", "工作领域", "genre", "类型", "member of sports team", "运动队", "sport", "运动项目",
})

_BCE = re.compile(r"\b(BCE|BC|B\.C\.)(?!\w)|公元前", re.IGNORECASE)
_CENTURY = re.compile(r"(\d{1,2})\s*(?:st|nd|rd|th)\s+century|(\d{1,2})\s*世纪", re.IGNORECASE)
_YEAR = re.compile(r"(\d{1,4})\s*年|\b(\d{3,4})\b|\b(\d{1,4})\s*(?:BCE|BC|CE|AD)\b|\b(?:AD|CE)\s*(\d{1,4})\b", re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class Role:
    index: int  # row number in the input table
    character_id: str
    lang: str
    category: str
    label: str
    description: str
    profile: str
    facts: tuple[str, ...]
    era: int | None  # a representative year (negative = BCE), None when undated
    domain: frozenset[str]

    def prompt_vars(self) -> dict:
        return {
            "label": self.label, "description": self.description, "category": self.category,
            "profile": self.profile, "facts": list(self.facts),
        }

    def system_message(self) -> str:
        """The SFT system message, exactly as the dialogues contract gives it."""
        return ditto_native.system_message(self.label, self.description, self.lang)


def roles_from_table(table: pl.DataFrame, *, source: str) -> list[Role]:
    """One Role per row; raises DittoError naming `source` and the row or column at fault.

    The profile is used as the characters stage wrote it (cut there, once).
    `facts` holds only the claims the profile does not already state, so that
    each fact appears once in a prompt; a profile rendered from the facts
    leaves none.
    """
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DittoError(f"{source}: missing column(s) {', '.join(missing)} (see the characters.parquet contract)")
    roles: list[Role] = []
    seen: dict[tuple[str, str], int] = {}
    for i, row in enumerate(table.iter_rows(named=True)):
        cid, lang, label = row.get("character_id"), row.get("lang"), row.get("label")
        for field, value in (("character_id", cid), ("lang", lang), ("label", label)):
            if not isinstance(value, str) or not value.strip():
                raise DittoError(f"{source}: row {i}: field {field} is empty")
        if (cid, lang) in seen:
            raise DittoError(f"{source}: row {i}: ({cid}, {lang}) repeats row {seen[(cid, lang)]}")
        seen[(cid, lang)] = i
        claims = [(str(c["property"]), str(c["value"])) for c in (row.get("claims") or []) if c and c.get("property") and c.get("value")]
        facts = tuple(f"{p}: {v}" for p, v in claims[:MAX_FACTS])
        profile = (row.get("profile") or "").strip() or "\n".join(facts)
        folded = profile.casefold()
        facts = tuple(f for f, (_, v) in zip(facts, claims) if v.casefold() not in folded)
        roles.append(
            Role(
                index=i, character_id=cid, lang=lang, category=(row.get("category") or "").strip(), label=label.strip(),
                description=(row.get("description") or "").strip(), profile=profile,
                facts=facts, era=era_of(claims), domain=domain_of(claims),
            )
        )
    return roles


def first_per_language(roles: Sequence[Role], limit: int) -> list[Role]:
    """The first `limit` roles of each language, in table order: the same number per language."""
    seen: Counter[str] = Counter()
    out = []
    for role in roles:
        if seen[role.lang] < limit:
            seen[role.lang] += 1
            out.append(role)
    return out


def era_of(claims: Iterable[tuple[str, str]]) -> int | None:
    by_property = {}
    for prop, value in claims:
        by_property.setdefault(prop.casefold(), value)
    for prop in _ERA_PROPERTIES:
        if prop in by_property:
            year = parse_year(by_property[prop])
            if year is not None:
                return year
    return None


def parse_year(text: str) -> int | None:
    """A year from a date as Wikidata labels write it: '551 BCE', '6th century BCE', '1879-03-14', '公元前551年', '19世纪'."""
    sign = -1 if _BCE.search(text) else 1
    century = _CENTURY.search(text)
    if century:
        c = int(century.group(1) or century.group(2))
        return sign * ((c - 1) * 100 + 50)
    year = _YEAR.search(text)
    if year:
        return sign * int(next(g for g in year.groups() if g))
    return None


def domain_of(claims: Iterable[tuple[str, str]]) -> frozenset[str]:
    return frozenset(value.casefold() for prop, value in claims if prop.casefold() in _DOMAIN_PROPERTIES)
