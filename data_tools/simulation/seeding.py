"""Stable seeds and ids derived from the run seed and names, independent of run order."""
from __future__ import annotations

import hashlib

import numpy as np


def stable_int(*parts: object, bits: int = 63) -> int:
    """A non-negative int of `bits` bits, the same on every machine and run for the same parts."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)


def rng_for(*parts: object) -> np.random.Generator:
    return np.random.default_rng(stable_int(*parts))


def session_id(character_id: str, lang: str, seed: int) -> str:
    """The dialogues contract's session id: deterministic from (character_id, lang, seed)."""
    return hashlib.sha256(f"ditto-session\x1f{character_id}\x1f{lang}\x1f{seed}".encode("utf-8")).hexdigest()[:20]
