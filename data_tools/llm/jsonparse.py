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
    for candidate in [m.group(1) for m in _FENCE.finditer(text)] + [text]:
        candidate = candidate.strip()
        fixed = _TRAILING_COMMA.sub(r"\1", candidate)
        for variant in (candidate, fixed):
            try:
                value = json.loads(variant)
                if isinstance(value, (dict, list)):
                    return value
            except ValueError:
                pass
        # Prose around the value: decode from each opening bracket, outermost first.
        for variant in (fixed, candidate):
            openings = [i for i, ch in enumerate(variant) if ch in "{["][:_MAX_OPENINGS]
            for start in openings:
                try:
                    return _DECODER.raw_decode(variant, start)[0]
                except ValueError:
                    continue
    return None
