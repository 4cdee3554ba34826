"""Seeded partner choice for query simulation, as a rotation within each language.

Ditto asks role A for questions that A can answer and its partner B cannot;
each question is then role-specific for A and contrastive for B. For every
role's contrastive turns to come from questions written with it as B, every
role must be somebody's partner as often as it asks. A rotation does that:
the roles of a language are put in a seeded order, and in round j role i is
paired with role i + s_j (mod n), for a shift s_j that is never 0. Each round
is then a derangement, and each role is B exactly once per round.

The order sorts by category (real or fictional), then era (by century), then
domain, with a seeded hash ordering the roles alike in all three, and the shifts start at n/2: a role is paired with
one about half the order away, which is most often of another category, era
or field. Planning is a sort, O(N log N), and depends only on the roles and
the seed, not on their order in the table.
"""
from __future__ import annotations

from collections.abc import Sequence

from data_tools.simulation.roles import Role
from data_tools.simulation.seeding import stable_int

ERA_GAP_YEARS = 100


def difference(a: Role, b: Role) -> float:
    """0 (alike) to 3 (different category, era and domain); unknown era or domain counts half."""
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


def contrast_order(roles: Sequence[Role], seed: int) -> list[Role]:
    """`roles` sorted by category, century, domain, then a seeded hash of (id, lang)."""
    def key(r: Role):
        return (
            r.category, r.era is None, (r.era or 0) // ERA_GAP_YEARS, min(r.domain) if r.domain else "",
            stable_int(seed, "partner-order", r.character_id, r.lang), r.character_id,
        )

    return sorted(roles, key=key)


def rotation_shifts(n: int, count: int) -> list[int]:
    """`count` shifts for a rotation of n roles: n//2, n//2 + 1, ... mod n, never 0, distinct while n allows."""
    if n < 2:
        return []
    shifts = [s for s in ((n // 2 + t) % n for t in range(n)) if s]
    return [shifts[j % len(shifts)] for j in range(count)]


def plan_partners(roles: Sequence[Role], count: int, seed: int, pool: Sequence[Role] = ()) -> dict[int, list[Role]]:
    """`count` partners for each role (by `Role.index`), from the roles of its language.

    A role alone in its language among `roles` takes its partners from `pool`
    (e.g. the rest of the table) by the same rotation; with no candidate at
    all it gets none.
    """
    by_lang: dict[str, list[Role]] = {}
    for role in roles:
        by_lang.setdefault(role.lang, []).append(role)
    partners: dict[int, list[Role]] = {}
    for lang, group in by_lang.items():
        if len(group) == 1:
            role = group[0]
            others = [c for c in pool if c.lang == lang and c.character_id != role.character_id]
            group = [role, *others]
            order = contrast_order(group, seed)
            at = next(i for i, r in enumerate(order) if r is role)
            partners[role.index] = [order[(at + s) % len(order)] for s in rotation_shifts(len(order), count)]
            continue
        order = contrast_order(group, seed)
        shifts = rotation_shifts(len(order), count)
        for i, role in enumerate(order):
            partners[role.index] = [order[(i + s) % len(order)] for s in shifts]
    return partners
