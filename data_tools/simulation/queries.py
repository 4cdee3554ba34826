"""Query simulation: the JSON a model returns for a pair (A, B), and how it is read.

The schema asks for exactly k questions, each with 1 or 2 evidence strings,
and bounds every string's length so that a small model cannot ramble inside a
string past the token limit, which would leave the JSON unfinished.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from ditto_native import normalize_text

from data_tools.llm.jsonparse import parse_json_lenient

MAX_STRING_CHARS = 160  # one question or one evidence fact
MIN_STRING_CHARS = 48  # shorter caps cut natural questions mid-sentence
MAX_EVIDENCE_ITEMS = 2
CHARS_PER_TOKEN = 3  # below English's ~4, so all k * (1 + evidence) strings usually fit the token limit


def _json_overhead_tokens(k: int) -> int:
    return 8 + 12 * k  # braces, keys and quotes around k questions


@dataclasses.dataclass(frozen=True)
class Question:
    text: str
    evidence: tuple[str, ...]
    source: str  # character_id of the role it was written for


def questions_schema(k: int, max_tokens: int = 768) -> dict[str, Any]:
    """JSON schema for k questions whose strings fit, all together, in about `max_tokens`."""
    room = (max_tokens - _json_overhead_tokens(k)) * CHARS_PER_TOKEN // (k * (1 + MAX_EVIDENCE_ITEMS))
    cap = max(MIN_STRING_CHARS, min(MAX_STRING_CHARS, room))
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
                        "question": {"type": "string", "minLength": 5, "maxLength": cap},
                        "evidence": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": MAX_EVIDENCE_ITEMS,
                            "items": {"type": "string", "minLength": 2, "maxLength": cap},
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


def parse_questions(text: str, source: str, k: int) -> list[Question] | None:
    """Up to k questions read leniently from a reply; None when there are none.

    Accepts the schema's shape, a bare list of question objects, or a list of
    plain strings (then without evidence), so endpoints that ignore
    `response_format` still count when their JSON is usable.
    """
    value = parse_json_lenient(text)
    if isinstance(value, dict):
        value = next((value[key] for key in ("questions", "items", "data") if isinstance(value.get(key), list)), None)
    if not isinstance(value, list):
        return None
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
        facts = tuple(e.strip() for e in evidence if isinstance(e, str) and e.strip()) if isinstance(evidence, list) else ()
        key = normalize_text(q)
        if key and key not in seen:
            seen.add(key)
            questions.append(Question(q.strip(), facts, source))
    return questions[:k] or None
