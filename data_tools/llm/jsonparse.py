"""Lenient JSON: read the value a model meant, from endpoints that ignore `response_format`.

Accepts a bare value, one wrapped in a Markdown code fence, one with prose
before or after it, and trailing commas. Anything else is None.
"""
from __future__ import annotations

import json
import re
from typing import Any

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)```", re.DOTALL)
_TRAILING_COMMA = re.compile(r",(\s*[}\]])")
_DECODER = json.JSONDecoder()
_MAX_OPENINGS = 32  # bounds the work on long replies that hold no JSON


def parse_json_lenient(text: str) -> Any | None:
    """The first JSON object or array in `text`, or None.

    >>> parse_json_lenient('Sure! ```json\\n{"a": [1, 2,],}\\n```')
    {'a': [1, 2]}
    """
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    for candidate in candidates:
        for variant in (candidate, _TRAILING_COMMA.sub(r"\1", candidate)):
            value = _first_value(variant)
            if value is not None:
                return value
    return None


def _first_value(text: str) -> Any | None:
    text = text.strip()
    try:
        value = json.loads(text)
        if isinstance(value, (dict, list)):
            return value
    except ValueError:
        pass
    openings = [i for i, ch in enumerate(text) if ch in "{["][:_MAX_OPENINGS]
    for start in openings:
        try:
            value, _ = _DECODER.raw_decode(text, start)
            return value
        except ValueError:
            continue
    return None
