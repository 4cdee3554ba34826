"""Dialogue simulation: characters in, one multi-turn session per character row out.

The method (Ditto, Lu et al. 2024; DESIGN.md):
1. Query simulation. Each role A is paired with seeded partners B. For each
   pair the model writes k questions that A can answer and B cannot, with the
   facts from A's material that support each answer, as JSON (constrained by
   a schema where the backend can). Unparsable JSON is asked for again, up to
   `query_tries` times in all, each try a new sample.
2. Turn planning. A session has exactly `turns` turns, about half of them
   role-specific (A's own questions) and half contrastive (questions written
   for roles that had A as their partner, the side that cannot answer;
   falling back to other roles' questions), in a seeded order.
3. Response simulation. Each turn is answered on its own, with A's material
   as reading: in character, refusing in character when the question is
   beyond A's knowledge.
4. Assembly into the dialogues contract.

Every call goes through the CallRunner, so a re-run after a crash reuses the
calls already made, and every choice is seeded, so it plans the same sessions.
"""
from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Sequence

import polars as pl
from ditto_native import DittoError, normalize_text

from data_tools.llm.runner import CallRunner
from data_tools.llm.types import CallFailed, ChatRequest, ChatResult
from data_tools.simulation.partners import choose_partners
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.queries import Question, parse_questions, questions_schema
from data_tools.simulation.roles import Role
from data_tools.simulation.schema import DIALOGUE_SCHEMA
from data_tools.simulation.seeding import rng_for, session_id, stable_int

SEED_BITS = 31  # per-call seeds fit every engine's int32 seed field


@dataclasses.dataclass(frozen=True)
class SimulationConfig:
    turns: int = 5  # exact turns per session; a turn is one question and one answer
    questions_per_pair: int = 3  # k, as in the paper
    seed: int = 0
    query_tries: int = 3  # the paper retries unparsable query JSON up to 3 times
    max_query_tokens: int = 768  # roomy: a model that follows the schema stops when the JSON closes
    max_answer_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 1.0

    def check(self) -> None:
        for name in ("turns", "questions_per_pair", "query_tries", "max_query_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                raise DittoError(f"--{name.replace('_', '-')} must be >= 1 (got {getattr(self, name)})")
        if not self.temperature >= 0:
            raise DittoError(f"--temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DittoError(f"--top-p must be in (0, 1] (got {self.top_p})")

    @property
    def query_calls_per_role(self) -> int:
        """Enough calls that A has questions for its role-specific turns (at most ceil(T/2))."""
        return math.ceil(math.ceil(self.turns / 2) / self.questions_per_pair)


@dataclasses.dataclass
class SimulationReport:
    sessions: int = 0
    turns: int = 0
    query_calls: int = 0  # (role, call) pairs asked for questions
    query_retries: int = 0  # tries repeated because the JSON did not parse
    query_failures: Counter = dataclasses.field(default_factory=Counter)  # reason -> query calls that yielded nothing
    dropped: dict = dataclasses.field(default_factory=dict)  # (character_id, lang) -> reason

    @property
    def failures(self) -> int:
        return sum(self.query_failures.values()) + len(self.dropped)


@dataclasses.dataclass
class _Plan:
    role: Role
    turn_types: list[str]
    questions: list[Question]


def simulate(
    roles: Sequence[Role],
    runner: CallRunner,
    templates: PromptTemplates,
    config: SimulationConfig,
    *,
    partner_pool: Sequence[Role] = (),
) -> tuple[pl.DataFrame, SimulationReport]:
    """Sessions for `roles`, in their order, as a dialogues DataFrame, and what happened.

    Partners come from `roles` of the same language; `partner_pool` (e.g. the
    rest of the table) is used for a language with no other role to pair with.
    """
    config.check()
    report = SimulationReport()
    calls_per_role = config.query_calls_per_role
    runner.plan(len(roles) * (calls_per_role + config.turns))

    # 1. Query simulation.
    by_lang: dict[str, list[Role]] = {}
    for role in roles:
        by_lang.setdefault(role.lang, []).append(role)
    pool_by_lang: dict[str, list[Role]] = {}
    for role in partner_pool:
        pool_by_lang.setdefault(role.lang, []).append(role)
    pairs: list[tuple[Role, int, Role | None]] = []
    for role in roles:
        candidates = by_lang[role.lang] if len(by_lang[role.lang]) > 1 else pool_by_lang.get(role.lang, [])
        partners = choose_partners(role, candidates, calls_per_role, config.seed)
        pairs.extend((role, j, partners[j] if partners else None) for j in range(calls_per_role))
    report.query_calls = len(pairs)
    asked = _ask_questions(pairs, runner, templates, config, report)

    # 2. Turn planning.
    plans = [_plan_turns(role, pairs, asked, by_lang[role.lang], config, report) for role in roles]
    live = [p for p in plans if p is not None]
    runner.plan(-config.turns * (len(plans) - len(live)))

    # 3. Response simulation.
    requests = [
        _answer_request(plan.role, q, i, templates, config) for plan in live for i, q in enumerate(plan.questions)
    ]
    results = runner.run(requests)

    # 4. Assembly.
    rows = []
    for n, plan in enumerate(live):
        answers = results[n * config.turns : (n + 1) * config.turns]
        failed = [a for a in answers if isinstance(a, CallFailed)]
        if failed:
            report.dropped[(plan.role.character_id, plan.role.lang)] = f"answer_failed:{failed[0].reason}"
            continue
        rows.append(_session_row(plan, answers, runner.backend.model_name, config.seed))
    report.sessions = len(rows)
    report.turns = len(rows) * config.turns
    return pl.DataFrame(rows, schema=DIALOGUE_SCHEMA), report


def _ask_questions(pairs, runner: CallRunner, templates: PromptTemplates, config: SimulationConfig, report: SimulationReport):
    """Questions per (role, call index); retries unparsable replies as new samples."""
    schema = questions_schema(config.questions_per_pair, config.max_query_tokens)
    asked: dict[tuple[int, int], list[Question]] = {}
    pending = list(pairs)
    for attempt in range(config.query_tries):
        if attempt:
            report.query_retries += len(pending)
            runner.plan(len(pending))
        requests = []
        for role, j, partner in pending:
            prompt = templates.render(
                "query", role.lang, a=role.prompt_vars(), b=partner.prompt_vars() if partner else None, k=config.questions_per_pair,
            )
            requests.append(
                ChatRequest.chat(
                    [{"role": "user", "content": prompt}],
                    max_tokens=config.max_query_tokens, temperature=config.temperature, top_p=config.top_p,
                    seed=stable_int(config.seed, "query", role.character_id, role.lang, j, attempt, bits=SEED_BITS),
                    json_schema=schema, sample_index=attempt,
                )
            )
        unparsed = []
        for (role, j, partner), result in zip(pending, runner.run(requests)):
            if isinstance(result, CallFailed):
                report.query_failures[f"call_failed:{result.reason}"] += 1  # the backend already retried it
                continue
            questions = parse_questions(result.text, role.character_id, config.questions_per_pair)
            if questions is None:
                unparsed.append((role, j, partner))
            else:
                asked[(role.index, j)] = questions
        pending = unparsed
        if not pending:
            break
    report.query_failures["unparsable_json"] += len(pending)
    if not report.query_failures["unparsable_json"]:
        del report.query_failures["unparsable_json"]
    return asked


def _plan_turns(role: Role, pairs, asked, same_lang: Sequence[Role], config: SimulationConfig, report: SimulationReport) -> _Plan | None:
    rng = rng_for(config.seed, "turns", role.character_id, role.lang)
    turns = config.turns
    n_specific = turns // 2 + (int(rng.integers(2)) if turns % 2 else 0)

    own = _dedupe(q for j in range(config.query_calls_per_role) for q in asked.get((role.index, j), []))
    if not own:
        report.dropped[(role.character_id, role.lang)] = "no_questions"
        return None
    taken = {normalize_text(q.text) for q in own}
    # Ditto's pairing: questions written for roles that had this role as their partner.
    paired = _dedupe(
        q for other, j, partner in pairs
        if partner is not None and partner.index == role.index and other.index != role.index and partner.lang == role.lang
        for q in asked.get((other.index, j), [])
    )
    paired = [q for q in paired if normalize_text(q.text) not in taken]
    taken |= {normalize_text(q.text) for q in paired}
    others = _dedupe(
        q for other in same_lang if other.index != role.index
        for j in range(config.query_calls_per_role) for q in asked.get((other.index, j), [])
    )
    others = [q for q in others if normalize_text(q.text) not in taken]
    contrastive_pool = [paired[i] for i in rng.permutation(len(paired))] + [others[i] for i in rng.permutation(len(others))]

    n_specific = min(n_specific, len(own))
    contrastive = contrastive_pool[: turns - n_specific]
    n_specific = min(len(own), turns - len(contrastive))  # too few contrastive questions: lean on A's own
    if n_specific + len(contrastive) < turns:
        report.dropped[(role.character_id, role.lang)] = "not_enough_questions"
        return None
    specific = [own[i] for i in sorted(rng.permutation(len(own))[:n_specific])]
    kinds = ["role_specific"] * n_specific + ["contrastive"] * len(contrastive)
    kinds = [kinds[i] for i in rng.permutation(turns)]
    s_iter, c_iter = iter(specific), iter(contrastive)
    questions = [next(s_iter) if kind == "role_specific" else next(c_iter) for kind in kinds]
    return _Plan(role, kinds, questions)


def _dedupe(questions) -> list[Question]:
    seen: set[str] = set()
    out = []
    for q in questions:
        key = normalize_text(q.text)
        if key not in seen:
            seen.add(key)
            out.append(q)
    return out


def _answer_request(role: Role, question: Question, turn: int, templates: PromptTemplates, config: SimulationConfig) -> ChatRequest:
    system = templates.render("response", role.lang, role=role.prompt_vars())
    return ChatRequest.chat(
        [{"role": "system", "content": system}, {"role": "user", "content": question.text}],
        max_tokens=config.max_answer_tokens, temperature=config.temperature, top_p=config.top_p,
        seed=stable_int(config.seed, "answer", role.character_id, role.lang, turn, question.text, bits=SEED_BITS),
    )


def _session_row(plan: _Plan, answers: Sequence[ChatResult], simulator: str, seed: int) -> dict:
    role = plan.role
    messages = []
    for question, answer in zip(plan.questions, answers):
        messages.append({"role": "user", "content": question.text})
        messages.append({"role": "assistant", "content": answer.text.strip()})
    contrastive = [kind == "contrastive" for kind in plan.turn_types]
    return {
        "session_id": session_id(role.character_id, role.lang, seed),
        "character_id": role.character_id,
        "lang": role.lang,
        "system": role.system_message(),
        "messages": messages,
        "turn_types": plan.turn_types,
        "rejection_labels": [int(c) for c in contrastive],
        "question_sources": [q.source for q in plan.questions],
        "evidence": [[] if c else list(q.evidence) for q, c in zip(plan.questions, contrastive)],
        "finish_reasons": [a.finish_reason for a in answers],
        "simulator": simulator,
        "seed": seed,
    }
