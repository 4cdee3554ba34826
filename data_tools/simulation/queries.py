"""Query simulation: the JSON a model returns for a pair (A, B), and how it is read.

The schema asks for exactly k questions, each with 1 or 2 evidence strings.
Every string has a cap from a per-string budget that a natural question (or
one copied fact) fits with room to spare. With constrained decoding a string
that reaches its cap is closed by the grammar mid-word, so a reply holding
such a string is treated as a failed parse and asked for again: nothing cut
is kept. A reply that runs out of tokens before the JSON closes fails to
parse the same way.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ditto_native import normalize_text

from data_tools.llm.jsonparse import parse_json_lenient

QUESTION_MAX_CHARS = 200  # a long natural question is ~120 characters in English
EVIDENCE_MAX_CHARS = 300  # one or two copied sentences
# Chinese says as much in about 40% of the characters (and costs SmolLM2's
# tokenizer 2-3 tokens a character): a long natural question is ~50 characters.
QUESTION_MAX_CHARS_ZH = 80
EVIDENCE_MAX_CHARS_ZH = 120
MAX_EVIDENCE_ITEMS = 2


def _chinese(lang: str) -> bool:
    return lang == "zh" or lang.startswith("zh-")


def string_caps(lang: str) -> tuple[int, int]:
    """(question, evidence) caps in characters for a language."""
    return (QUESTION_MAX_CHARS_ZH, EVIDENCE_MAX_CHARS_ZH) if _chinese(lang) else (QUESTION_MAX_CHARS, EVIDENCE_MAX_CHARS)


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    source: str  # character_id of the role it was written for
    key: str = dataclasses.field(default="", compare=False, repr=False)  # normalised text, for dedupe

    def __post_init__(self) -> None:
        if not self.key:
            object.__setattr__(self, "key", normalize_text(self.text))


# A Chinese question opens in Chinese (after an optional quote or bracket). Small
# models asked in Chinese often drift into English; once the first character is
# Han they stay in Chinese, and the clean stage's script check keeps the turn.
_OPENS_IN_HAN = r"^[“「《（(]?\p{Han}.*$"


def questions_schema(k: int, lang: str = "en") -> dict[str, Any]:
    """JSON schema for exactly k questions, each with 1 to MAX_EVIDENCE_ITEMS evidence strings;
    for Chinese (`zh`, `zh-*`), each question opens with a Han character."""
    question_cap, evidence_cap = string_caps(lang)
    question: dict[str, Any] = {"type": "string", "minLength": 5, "maxLength": question_cap}
    if _chinese(lang):
        question["pattern"] = _OPENS_IN_HAN
    return {
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "minItems": k,
                "maxItems": k,
                "items": {
                    "type": "object",
                    "properties": {
                        "question": question,
                        "evidence": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_EVIDENCE_ITEMS,
                            "items": {"type": "string", "minLength": 2, "maxLength": evidence_cap},
                        },
                    },
                    "required": ["question", "evidence"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["questions"],
        "additionalProperties": False,
    }


def parse_questions(text: str, source: str, k: int, lang: str = "en") -> list[Question] | None:
    """Up to k questions read leniently from a reply; None when there are none
    or when a string reached its cap (see `read_questions`)."""
    return read_questions(text, source, k, lang)[0]


def read_questions(text: str, source: str, k: int, lang: str = "en") -> tuple[list[Question] | None, str | None]:
    """(up to k questions, None), or (None, why): `unparsable_json` or `string_at_cap`.

    Accepts the schema's shape, a bare list of question objects, or a list of
    plain strings (then without evidence), so endpoints that ignore
    `response_format` still count when their JSON is usable.
    """
    question_cap, evidence_cap = string_caps(lang)
    value = parse_json_lenient(text)
    if isinstance(value, dict):
        value = next((value[key] for key in ("questions", "items", "data") if isinstance(value.get(key), list)), None)
    if not isinstance(value, list):
        return None, "unparsable_json"
    questions: list[Question] = []
    seen: set[str] = set()
    for item in value:
        if isinstance(item, str):
            q, evidence = item, []
        elif isinstance(item, dict):
            q = item.get("question") or item.get("q") or item.get("text")
            evidence = item.get("evidence") or []
        else:
            continue
        if not isinstance(q, str) or not q.strip():
            continue
        if isinstance(evidence, str):
            evidence = [evidence]
        evidence = [e for e in evidence if isinstance(e, str) and e.strip()] if isinstance(evidence, list) else []
        if len(q) >= question_cap or any(len(e) >= evidence_cap for e in evidence):
            return None, "string_at_cap"
        key = normalize_text(q)
        if key and key not in seen:
            seen.add(key)
            questions.append(Question(q.strip(), tuple(e.strip() for e in evidence), source, key))
    return (questions[:k], None) if questions else (None, "unparsable_json")
