"""`ditto-eval build`: held-out characters -> a WikiRoleEval-style evaluation file.

- Held-out roles only: a character whose `character_id` appears in any
  training dialogues file, in any language, is left out.
- One session per character row, of `turns` prompts mixing role-specific and
  contrastive questions. The questions come from the simulation's own query
  step (the same prompts, partners, JSON schema, re-asks and turn planning),
  so evaluation questions are made exactly like training questions.
- Per turn: the rejection label (1 = contrastive, beyond the role), and
  evidence facts: the question's own evidence, then the role's first profile
  facts (for a contrastive turn only the latter: what the role does know).
- Per session: 4 identity candidates as `[Name] description`, the true role
  and 3 distractors of the same language, in a seeded order.

Records follow the published layout (see `records`): `system`, `prompts`,
`role_consist_cands`, `rejection_labels`, `evidence`, `meta`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl
from ditto_native import DittoError, normalize_text

from data_tools.llm.runner import CallRunner
from data_tools.simulation import pipeline as sim
from data_tools.simulation.partners import plan_partners
from data_tools.simulation.prompts import PromptTemplates
from data_tools.sentences import truncate_at_sentence
from data_tools.simulation.roles import Role
from data_tools.simulation.seeding import rng_for, session_id


@dataclasses.dataclass(frozen=True)
class BuildSettings:
    n: int = 100  # sessions: one per held-out character row
    turns: int = 5  # prompts per session, as in the paper
    questions_per_pair: int = 3  # k, as in simulation
    seed: int = 0
    max_query_tokens: int = 768
    temperature: float = 0.7
    top_p: float = 1.0
    candidates: int = 4  # identity candidates: the role and 3 distractors
    evidence_facts: int = 5  # profile facts added to every turn's evidence
    summary_chars: int = 600  # `meta.summary`: the profile's opening, for the knowledge judge

    def check(self) -> None:
        for name in ("n", "turns", "questions_per_pair", "max_query_tokens", "summary_chars"):
            if getattr(self, name) < 1:
                raise DittoError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if self.candidates < 2:
            raise DittoError(f"--candidates must be >= 2 (got {self.candidates})")
        if self.evidence_facts < 0:
            raise DittoError(f"--evidence-facts must be >= 0 (got {self.evidence_facts})")

    def simulation(self) -> sim.SimulationConfig:
        config = sim.SimulationConfig(
            turns=self.turns, questions_per_pair=self.questions_per_pair, seed=self.seed,
            max_query_tokens=self.max_query_tokens, temperature=self.temperature, top_p=self.top_p,
        )
        config.check()
        return config


def training_ids(paths: Sequence[str | Path]) -> set[str]:
    """Every character_id in the given dialogues files (any language)."""
    ids: set[str] = set()
    for path in paths:
        try:
            frame = pl.read_parquet(path, columns=["character_id"])
        except FileNotFoundError:
            raise
        except pl.exceptions.ColumnNotFoundError:
            raise DittoError(f"{path}: missing column 'character_id' (expected a dialogues file)") from None
        except Exception as exc:  # polars raises several types for a file that is not Parquet
            raise DittoError(f"{path}: cannot read as Parquet: {' '.join(str(exc).split())[:200]}") from None
        ids.update(v for v in frame["character_id"].to_list() if v is not None)
    return ids


def held_out(roles: Sequence[Role], trained: set[str], n: int) -> list[Role]:
    """The first n roles not trained on, taking languages in turn (en, zh, en, ...) so every language is scored."""
    by_lang: dict[str, list[Role]] = {}
    for role in roles:
        if role.character_id not in trained:
            by_lang.setdefault(role.lang, []).append(role)
    queues = [list(q) for q in by_lang.values()]
    chosen: list[Role] = []
    while len(chosen) < n and any(queues):
        for queue in queues:
            if queue and len(chosen) < n:
                chosen.append(queue.pop(0))
    return sorted(chosen, key=lambda r: r.index)


def identity_candidates(role: Role, pool: Sequence[Role], count: int, seed: int) -> list[str]:
    """`count` candidates as `[Name] description`: the role and distractors of its language, shuffled."""
    seen = {normalize_text(role.label)}
    others = []
    for other in pool:
        key = normalize_text(other.label)
        if other.lang == role.lang and other.character_id != role.character_id and key not in seen:
            seen.add(key)
            others.append(other)
    if len(others) < count - 1:
        raise DittoError(
            f"language {role.lang}: only {len(others)} other characters with distinct labels; "
            f"{count - 1} distractors are needed per session (--candidates {count})"
        )
    rng = rng_for(seed, "distractors", role.character_id, role.lang)
    picked = [others[int(i)] for i in rng.choice(len(others), size=count - 1, replace=False)]
    cands = [role, *picked]
    return [_candidate_text(cands[int(i)]) for i in rng.permutation(len(cands))]


def _candidate_text(role: Role) -> str:
    return f"[{role.label}] {role.description}".rstrip()


def build_sessions(
    everyone: Sequence[Role], chosen: Sequence[Role], runner: CallRunner, templates: PromptTemplates, settings: BuildSettings
) -> tuple[list[dict[str, Any]], sim.SimulationReport]:
    """One evaluation record per chosen role that got enough questions, in the chosen order."""
    config = settings.simulation()
    report = sim.SimulationReport()
    # Query simulation and turn planning exactly as `simulate` does them (data_tools.simulation.pipeline);
    # only the answers are left out: the model under test writes those.
    calls_per_role = config.query_calls_per_role
    partners = plan_partners(chosen, calls_per_role, config.seed, everyone)
    pairs = [(role, j, partners[role.index][j] if partners[role.index] else None) for role in chosen for j in range(calls_per_role)]
    report.query_calls = len(pairs)
    runner.plan(len(pairs))
    asked = sim._ask_questions(pairs, runner, templates, config, report)
    plans = sim.plan_sessions(chosen, partners, asked, config, report)
    records = [_record(plan, everyone, settings, runner.backend.model_name) for plan in plans if plan is not None]
    report.sessions = len(records)
    report.turns = len(records) * config.turns
    return records, report


def _record(plan, everyone: Sequence[Role], settings: BuildSettings, builder: str) -> dict[str, Any]:
    role: Role = plan.role
    facts = list(role.facts[: settings.evidence_facts])
    evidence = []
    for kind, question in zip(plan.turn_types, plan.questions):
        own = list(question.evidence) if kind == "role_specific" else []
        evidence.append(own + [f for f in facts if f not in own])
    return {
        "session_id": session_id(role.character_id, role.lang, settings.seed),
        "system": role.system_message(),
        "prompts": [q.text for q in plan.questions],
        "role_consist_cands": identity_candidates(role, everyone, settings.candidates, settings.seed),
        "rejection_labels": [int(kind == "contrastive") for kind in plan.turn_types],
        "evidence": evidence,
        "meta": {
            "character_id": role.character_id,
            "label": role.label,
            "description": role.description,
            "lang": role.lang,
            "category": role.category,
            "summary": truncate_at_sentence(role.profile, settings.summary_chars),
            "turn_types": list(plan.turn_types),
            "question_sources": [q.source for q in plan.questions],
            "pairings": list(plan.pairings),
            "builder": builder,
            "seed": settings.seed,
        },
    }
