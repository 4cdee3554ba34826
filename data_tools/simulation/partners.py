"""Seeded partner choice for query simulation.

Ditto asks for questions that A can answer and its partner B cannot. That
works best when B is far from A, so partners are drawn with a weight of
4**d, where d (0 to 3) counts how A and B differ in category (real or
fictional), era (birth dates at least a century apart) and domain (no
occupation, work or field in common). An unknown era or domain counts as half
a difference. Every role gets its own generator, so a choice depends only on
the seed, the role and the candidates.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from data_tools.simulation.roles import Role
from data_tools.simulation.seeding import rng_for

ERA_GAP_YEARS = 100


def difference(a: Role, b: Role) -> float:
    """0 (alike) to 3 (different category, era and domain)."""
    d = float(bool(a.category) and bool(b.category) and a.category != b.category)
    if a.era is None or b.era is None:
        d += 0.5
    elif abs(a.era - b.era) >= ERA_GAP_YEARS:
        d += 1.0
    if not a.domain or not b.domain:
        d += 0.5
    elif not (a.domain & b.domain):
        d += 1.0
    return d


def choose_partners(role: Role, candidates: Sequence[Role], count: int, seed: int) -> list[Role]:
    """`count` partners for `role` from `candidates` (itself excluded), distinct while there are enough."""
    pool = [c for c in candidates if (c.character_id, c.lang) != (role.character_id, role.lang)]
    if not pool or count < 1:
        return []
    rng = rng_for(seed, "partner", role.character_id, role.lang)
    weights = np.array([4.0 ** difference(role, c) for c in pool])
    chosen: list[Role] = []
    while len(chosen) < count:
        take = min(count - len(chosen), len(pool))
        picks = rng.choice(len(pool), size=take, replace=False, p=weights / weights.sum())
        chosen.extend(pool[int(i)] for i in picks)
    return chosen
