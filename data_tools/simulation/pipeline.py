"""Dialogue simulation: characters in, one multi-turn session per character row out.

The method (Ditto, Lu et al. 2024; DESIGN.md):
1. Query simulation. Each role A is paired with partners B by a seeded
   rotation within its language (`partners.plan_partners`), so that every
   role is somebody's B as often as it asks. For each pair the model writes k
   questions that A can answer and B cannot, with the facts from A's material
   that support each answer, as JSON (constrained by a schema where the
   backend can). A reply that does not parse, or holds a string that reached
   its cap, is asked for again, up to `query_tries` times in all, each try a
   new sample. Evidence is checked against A's material; what does not verify
   is removed and counted (`evidence.Material`).
2. Turn planning. A session has exactly `turns` turns, about half of them
   role-specific (A's own questions) and half contrastive. Contrastive
   questions are those written for roles that had A as their partner
   (`paired`); only when too few of those parsed does a turn take another
   role's question, recorded as `fallback` in the `pairings` column. Planning
   is linear in the number of roles after one sort.
3. Response simulation. Each turn is answered on its own, with A's material
   as reading: in character, refusing in character when the question is
   beyond A's knowledge. An answer cut at the token limit is trimmed back to
   its last complete sentence (`length_trimmed`); one with too little left
   keeps finish reason `length`, so the clean stage drops it as truncated.
4. Assembly into the dialogues contract.

Every call goes through the CallRunner, so a re-run after a crash reuses the
calls already made, and every choice is seeded, so it plans the same sessions.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from collections.abc import Iterable, Sequence

import polars as pl
from ditto_native import DittoError

from data_tools.llm.runner import CallRunner
from data_tools.llm.types import CallFailed, ChatRequest, ChatResult
from data_tools.sentences import trim_to_last_sentence
from data_tools.simulation.evidence import Material
from data_tools.simulation.partners import contrast_order, plan_partners
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.queries import Question, questions_schema, read_questions
from data_tools.simulation.roles import Role
from data_tools.simulation.schema import DIALOGUE_SCHEMA
from data_tools.simulation.seeding import session_id, stable_int

SEED_BITS = 31  # per-call seeds fit every engine's int32 seed field
FALLBACK_SCAN = 16  # roles whose questions a turn plan may borrow when too few paired questions parsed
# Calls are built and sent a window at a time, so a run holds the requests and replies of one
# window, not of the whole table; the backend keeps its concurrency full within a window.
QUERY_WINDOW = 4096  # (role, call) pairs
ANSWER_WINDOW = 1024  # sessions


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
    min_trimmed_chars: int = 20  # a cut answer trimmed shorter than this stays cut ("length"), for clean to drop

    def check(self) -> None:
        for name in ("turns", "questions_per_pair", "query_tries", "max_query_tokens", "max_answer_tokens"):
            if getattr(self, name) < 1:
                flag = "max-new-tokens" if name == "max_answer_tokens" else name.replace("_", "-")  # the CLI's name
                raise DittoError(f"--{flag} must be >= 1 (got {getattr(self, name)})")
        if not self.temperature >= 0:
            raise DittoError(f"--temperature must be >= 0 (got {self.temperature})")
        if not 0 < self.top_p <= 1:
            raise DittoError(f"--top-p must be in (0, 1] (got {self.top_p})")

    @property
    def query_calls_per_role(self) -> int:
        """Enough calls that A has questions for its role-specific turns, and, being B as often as it
        asks, paired questions for its contrastive turns (each at most ceil(T/2))."""
        return math.ceil(math.ceil(self.turns / 2) / self.questions_per_pair)


@dataclasses.dataclass
class LangReport:
    """What happened to one language's roles; every field is a count."""

    sessions: int = 0
    turns: int = 0
    contrastive_paired: int = 0
    contrastive_fallback: int = 0
    questions_asked: int = 0  # parsed questions, role-specific for the role that asked
    questions_unverified: int = 0  # ... whose evidence was all unverified (kept, with no evidence)
    evidence_checked: int = 0
    evidence_verified: int = 0
    answers_trimmed: int = 0  # cut at the token limit, trimmed to the last sentence: length_trimmed
    answers_cut: int = 0  # cut with too little before the last sentence end: left as length
    replies_at_cap: int = 0  # query replies with a string at its cap, asked again

    def to_dict(self) -> dict[str, object]:
        out: dict[str, object] = dataclasses.asdict(self)
        contrastive = self.contrastive_paired + self.contrastive_fallback
        out["paired_share"] = round(self.contrastive_paired / contrastive, 4) if contrastive else None
        out["evidence_verified_rate"] = round(self.evidence_verified / self.evidence_checked, 4) if self.evidence_checked else None
        return out


@dataclasses.dataclass
class SimulationReport:
    sessions: int = 0
    turns: int = 0
    query_calls: int = 0  # (role, call) pairs asked for questions
    query_retries: int = 0  # tries repeated because the JSON did not parse or a string reached its cap
    query_failures: Counter = dataclasses.field(default_factory=Counter)  # reason -> query calls that yielded nothing
    dropped: dict = dataclasses.field(default_factory=dict)  # (character_id, lang) -> reason
    by_lang: dict = dataclasses.field(default_factory=dict)  # lang -> LangReport

    @property
    def failures(self) -> int:
        return sum(self.query_failures.values()) + len(self.dropped)

    def lang(self, lang: str) -> LangReport:
        return self.by_lang.setdefault(lang, LangReport())

    def to_dict(self) -> dict[str, object]:
        dropped = Counter(self.dropped.values())
        return {
            "sessions": self.sessions,
            "turns": self.turns,
            "query_calls": self.query_calls,
            "query_retries": self.query_retries,
            "query_failures": dict(sorted(self.query_failures.items())),
            "dropped_sessions": dict(sorted(dropped.items())),
            "by_lang": {lang: r.to_dict() for lang, r in sorted(self.by_lang.items())},
        }


@dataclasses.dataclass
class _Plan:
    role: Role
    turn_types: list[str]
    questions: list[Question]
    pairings: list[str | None]


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
    partners = plan_partners(roles, calls_per_role, config.seed, partner_pool)
    pairs = [(role, j, (partners[role.index][j] if partners[role.index] else None)) for role in roles for j in range(calls_per_role)]
    report.query_calls = len(pairs)
    asked: dict[tuple[int, int], list[Question]] = {}
    for start in range(0, len(pairs), QUERY_WINDOW):
        asked.update(_ask_questions(pairs[start : start + QUERY_WINDOW], runner, templates, config, report))

    # 2. Turn planning.
    plans = plan_sessions(roles, partners, asked, config, report)
    live = [p for p in plans if p is not None]
    runner.plan(-config.turns * (len(plans) - len(live)))

    # 3. Response simulation and 4. assembly, a window of sessions at a time (kept as Arrow frames).
    frames = [pl.DataFrame([], schema=DIALOGUE_SCHEMA)]
    for start in range(0, len(live), ANSWER_WINDOW):
        frames.append(_answer_sessions(live[start : start + ANSWER_WINDOW], runner, templates, config, report))
    dialogues = pl.concat(frames)
    report.sessions = dialogues.height
    report.turns = dialogues.height * config.turns
    return dialogues, report


def _answer_sessions(plans: Sequence[_Plan], runner: CallRunner, templates: PromptTemplates, config: SimulationConfig,
                     report: SimulationReport) -> pl.DataFrame:
    """Answer every turn of these plans; their sessions (those whose answers all came back) as rows."""
    requests = [_answer_request(plan.role, q, i, templates, config) for plan in plans for i, q in enumerate(plan.questions)]
    results = runner.run(requests)
    rows = []
    for n, plan in enumerate(plans):
        answers = results[n * config.turns : (n + 1) * config.turns]
        failed = [a for a in answers if isinstance(a, CallFailed)]
        if failed:
            report.dropped[(plan.role.character_id, plan.role.lang)] = f"answer_failed:{failed[0].reason}"
            continue
        stats = report.lang(plan.role.lang)
        answers = [_trim_answer(a, config, stats) for a in answers]
        rows.append(_session_row(plan, answers, runner.backend.model_name, config.seed))
        stats.sessions += 1
        stats.turns += config.turns
        stats.contrastive_paired += plan.pairings.count("paired")
        stats.contrastive_fallback += plan.pairings.count("fallback")
    return pl.DataFrame(rows, schema=DIALOGUE_SCHEMA)


def _ask_questions(pairs, runner: CallRunner, templates: PromptTemplates, config: SimulationConfig, report: SimulationReport):
    """Questions per (role index, call index), evidence verified; retries failed parses as new samples."""
    asked: dict[tuple[int, int], list[Question]] = {}
    materials: dict[int, Material] = {}
    pending = list(pairs)
    last_failure: dict[tuple[int, int], str] = {}
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
                    json_schema=questions_schema(config.questions_per_pair, role.lang), sample_index=attempt,
                )
            )
        unparsed = []
        for (role, j, partner), result in zip(pending, runner.run(requests)):
            if isinstance(result, CallFailed):
                report.query_failures[f"call_failed:{result.reason}"] += 1  # the backend already retried it
                continue
            questions, why = read_questions(result.text, role.character_id, config.questions_per_pair, role.lang)
            if questions is None:
                if why == "string_at_cap":
                    report.lang(role.lang).replies_at_cap += 1
                last_failure[(role.index, j)] = why or "unparsable_json"
                unparsed.append((role, j, partner))
                continue
            if role.index not in materials:
                materials[role.index] = Material(role.profile, role.facts)
            asked[(role.index, j)] = [_verified(q, materials[role.index], report.lang(role.lang)) for q in questions]
        pending = unparsed
        if not pending:
            break
    for role, j, _ in pending:
        report.query_failures[last_failure[(role.index, j)]] += 1
    return asked


def _verified(question: Question, material: Material, stats: LangReport) -> Question:
    """The question with only the evidence its role's material verifies."""
    kept = tuple(e for e in question.evidence if material.verifies(e))
    stats.questions_asked += 1
    stats.evidence_checked += len(question.evidence)
    stats.evidence_verified += len(kept)
    if not kept:
        stats.questions_unverified += 1
    return dataclasses.replace(question, evidence=kept)


def plan_sessions(
    roles: Sequence[Role],
    partners: dict[int, list[Role]],
    asked: dict[tuple[int, int], list[Question]],
    config: SimulationConfig,
    report: SimulationReport,
) -> list[_Plan | None]:
    """One turn plan per role (None when it cannot be filled, with the reason in `report.dropped`).

    `partners[A.index][j]` is B of A's j-th query call and `asked[(A.index, j)]`
    the questions it produced. O(N) after one sort per language.
    """
    calls = config.query_calls_per_role
    # Who wrote questions with this role as B: the inverse of the partner map.
    written_for: dict[int, list[tuple[int, int]]] = {}
    for role in roles:
        for j, partner in enumerate(partners.get(role.index, [])):
            if partner.lang == role.lang and partner.index != role.index:
                written_for.setdefault(partner.index, []).append((role.index, j))
    # Fallback donors: roles about half the contrast order away, as the rotation's partners are.
    order_by_lang: dict[str, list[Role]] = {}
    for role in roles:
        order_by_lang.setdefault(role.lang, []).append(role)
    position: dict[int, int] = {}
    for lang, group in order_by_lang.items():
        order_by_lang[lang] = contrast_order(group, config.seed)
        position.update((r.index, i) for i, r in enumerate(order_by_lang[lang]))

    def own(index: int) -> Iterable[Question]:
        return (q for j in range(calls) for q in asked.get((index, j), []))

    def donors(role: Role) -> Iterable[Question]:
        order = order_by_lang[role.lang]
        n = len(order)
        start = position[role.index] + n // 2
        for t in range(min(FALLBACK_SCAN, n)):
            other = order[(start + (t + 1) // 2 * (-1) ** t) % n]  # start, start-1, start+1, start-2, ...
            if other.index != role.index:
                yield from own(other.index)

    plans = []
    for role in roles:
        paired = (q for a, j in written_for.get(role.index, []) for q in asked.get((a, j), []))
        plans.append(_plan_turns(role, own(role.index), paired, donors(role), config, report))
    return plans


def _plan_turns(
    role: Role, own: Iterable[Question], paired: Iterable[Question], donors: Iterable[Question],
    config: SimulationConfig, report: SimulationReport,
) -> _Plan | None:
    rng = _Dice(config.seed, "turns", role.character_id, role.lang)
    turns = config.turns
    n_specific = turns // 2 + (rng.below(2) if turns % 2 else 0)

    taken: set[str] = set()
    own_q = _take_new(own, taken, limit=None)
    if not own_q:
        report.dropped[(role.character_id, role.lang)] = "no_questions"
        return None
    n_contrastive = turns - min(n_specific, len(own_q))
    paired_q = _take_new(paired, taken, limit=None)
    rng.shuffle(paired_q)
    contrastive = [(q, "paired") for q in paired_q[:n_contrastive]]
    if len(contrastive) < n_contrastive:
        extra = _take_new(donors, taken, limit=n_contrastive - len(contrastive))
        contrastive += [(q, "fallback") for q in extra]

    n_specific = min(len(own_q), turns - len(contrastive))  # too few contrastive questions: lean on A's own
    if n_specific + len(contrastive) < turns:
        report.dropped[(role.character_id, role.lang)] = "not_enough_questions"
        return None
    picks = list(range(len(own_q)))
    rng.shuffle(picks)
    specific = [own_q[i] for i in sorted(picks[:n_specific])]
    kinds = ["role_specific"] * n_specific + ["contrastive"] * len(contrastive)
    rng.shuffle(kinds)
    s_iter, c_iter = iter(specific), iter(contrastive)
    questions, pairings = [], []
    for kind in kinds:
        if kind == "role_specific":
            questions.append(next(s_iter))
            pairings.append(None)
        else:
            q, how = next(c_iter)
            questions.append(q)
            pairings.append(how)
    return _Plan(role, kinds, questions, pairings)


class _Dice:
    """A role's seeded draws for its turn plan: the 256 bits of one SHA-256,
    spent as a mixed-radix number (a few small shuffles need ~40 bits). Much
    cheaper than a generator per role, which matters at 100k roles."""

    def __init__(self, *parts: object):
        self._bits = int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest(), "big")
        self._parts = parts
        self._refills = 0

    def below(self, n: int) -> int:
        if self._bits < n:  # spent (only for very long plans): draw 256 more bits
            self._refills += 1
            self.__init__(*self._parts, self._refills)
        self._bits, r = divmod(self._bits, n)
        return r

    def shuffle(self, items: list) -> None:
        for i in range(len(items) - 1, 0, -1):
            j = self.below(i + 1)
            items[i], items[j] = items[j], items[i]


def _take_new(questions: Iterable[Question], taken: set[str], *, limit: int | None) -> list[Question]:
    """Questions whose normalised text is not in `taken` yet (adding them), up to `limit`."""
    out = []
    for q in questions:
        if limit is not None and len(out) >= limit:
            break
        if q.key not in taken:
            taken.add(q.key)
            out.append(q)
    return out


def _trim_answer(answer: ChatResult, config: SimulationConfig, stats: LangReport) -> ChatResult:
    """An answer cut at the token limit, trimmed back to its last complete sentence when enough is left."""
    if answer.finish_reason != "length":
        return answer
    trimmed = trim_to_last_sentence(answer.text.strip())
    if len(trimmed) < config.min_trimmed_chars:
        stats.answers_cut += 1
        return answer
    stats.answers_trimmed += 1
    return dataclasses.replace(answer, text=trimmed, finish_reason="length_trimmed")


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
        "pairings": plan.pairings,
        "simulator": simulator,
        "seed": seed,
    }
