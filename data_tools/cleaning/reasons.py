"""The quarantine contract's reason codes, in the contract's order.

The turn checks in Rust own most codes (`ditto_native.REASON_CODES`); the
checks written as Polars expressions add theirs here.
"""
from __future__ import annotations

from ditto_native import REASON_CODES as NATIVE_REASON_CODES

PROMPT_ECHO = "prompt_echo"
LABEL_MISMATCH = "label_mismatch"

# prompt_echo sits before the dedupe codes, as in DESIGN.md's list.
_AT = NATIVE_REASON_CODES.index("exact_duplicate")
REASON_CODES: tuple[str, ...] = (*NATIVE_REASON_CODES[:_AT], PROMPT_ECHO, *NATIVE_REASON_CODES[_AT:])
