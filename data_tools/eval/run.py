"""`ditto-eval run`: answer every session with the model, judge every turn, add judge-free flags.

Order of work: all answers (turn by turn, see `answer`), then the judge-free
flags, then every judgement (3 kinds x K samples per turn, see `judging`).
Every LLM call goes through a call cache, so a run killed at any point
resumes without repeating a call. The results file is written once, at the
end, atomically.

A results record is the input record plus:
- `messages`: the conversation (system intro first, as in the published layout);
- `finish_reasons`: per turn;
- `consist_scores`, `knowledge_scores`, `reject_scores`: per turn (see `judging`);
- `judge_unparsed`: per kind, per turn, the samples that never parsed;
- `leak_flags`, `identity_break_flags`, `refusal_flags`: per turn (see `flags`);
- `model`, `judge`, `judge_samples`, `system_policy`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from data_tools.cleaning.config import CleanConfig
from data_tools.eval.answer import AnswerSettings, Answered, Conversation, answer_conversations
from data_tools.eval.flags import FlagSession, judge_free_flags
from data_tools.eval.judging import (
    REFUSAL_SCHEMA,
    SCORE_SCHEMA,
    JudgeSettings,
    JudgeStats,
    Question,
    ask_judge,
    choice_schema,
    consistency_score,
    knowledge_score,
    parse_binary,
    parse_choice,
    parse_score,
    rejection_vote,
)
from data_tools.eval.prompts import EvalPrompts
from data_tools.eval.records import EvalSession
from data_tools.llm.runner import CallRunner

RESULT_FIELDS = (
    "messages", "finish_reasons", "consist_scores", "knowledge_scores", "reject_scores", "judge_unparsed",
    "leak_flags", "identity_break_flags", "refusal_flags", "model", "judge", "judge_samples", "system_policy",
)


@dataclasses.dataclass
class RunReport:
    sessions: int = 0
    turns: int = 0
    judge: JudgeStats = dataclasses.field(default_factory=JudgeStats)
    reject_nulls: int = 0  # turns whose rejection vote tied or never parsed: excluded from the mean


def judge_questions(session: EvalSession, answers: Sequence[str], prompts: EvalPrompts) -> list[Question]:
    """The 3 judgements of each answered turn, in turn order: consistency, knowledge, rejection."""
    names = [c.name for c in session.candidates]
    candidates = [{"name": c.name, "description": c.description} for c in session.candidates]
    questions = []
    for turn, (prompt, answer) in enumerate(zip(session.prompts, answers)):
        shared = dict(question=prompt, answer=answer)
        questions += [
            Question(
                ("consistency", session.key, turn),
                prompts.render("judge_consistency", session.lang, candidates=candidates, **shared),
                choice_schema(names),
                lambda text, names=names: parse_choice(text, names),
            ),
            Question(
                ("knowledge", session.key, turn),
                prompts.render(
                    "judge_knowledge", session.lang, label=session.label, description=session.description,
                    summary=session.summary, evidence=list(session.evidence[turn]), **shared,
                ),
                SCORE_SCHEMA,
                parse_score,
            ),
            Question(
                ("rejection", session.key, turn),
                prompts.render("judge_rejection", session.lang, label=session.label, **shared),
                REFUSAL_SCHEMA,
                parse_binary,
            ),
        ]
    return questions


def evaluate(
    sessions: Sequence[EvalSession],
    model_runner: CallRunner,
    judge_runner: CallRunner,
    prompts: EvalPrompts,
    *,
    answer: AnswerSettings,
    judge: JudgeSettings,
    system_policy: str,
    clean: CleanConfig | None = None,
    model_label: str | None = None,
) -> tuple[list[dict[str, Any]], RunReport]:
    """Results records, one per session in input order, and what happened."""
    report = RunReport(sessions=len(sessions), turns=sum(s.turns for s in sessions))
    model_name = model_label or model_runner.backend.model_name
    answered = answer_conversations(
        [Conversation(s.key, s.system, s.prompts) for s in sessions], model_runner, answer, system_policy
    )
    flags = judge_free_flags(
        [FlagSession(s.label, s.description, s.lang, s.prompts, a.answers, s.rejection_labels) for s, a in zip(sessions, answered)],
        model_runner.backend.model_name,
        clean,
    )
    per_session = [judge_questions(s, a.answers, prompts) for s, a in zip(sessions, answered)]
    flat = [q for qs in per_session for q in qs]
    values = ask_judge(flat, judge_runner, judge, report.judge)

    records = []
    start = 0
    for session, done, session_flags, questions in zip(sessions, answered, flags, per_session):
        votes = values[start : start + len(questions)]
        start += len(questions)
        record = _result_record(session, done, votes, judge, report)
        record.update(session_flags)
        record.update(
            model=model_name, judge=judge_runner.backend.model_name, judge_samples=judge.samples, system_policy=system_policy,
        )
        records.append(record)
    return records, report


def _result_record(session: EvalSession, done: Answered, votes: list[list[Any]], judge: JudgeSettings, report: RunReport) -> dict[str, Any]:
    consist, knowledge, reject = [], [], []
    unparsed: dict[str, list[int]] = {"consistency": [], "knowledge": [], "rejection": []}
    true_name = session.true_candidate.name
    for turn in range(len(done.answers)):
        choices, scores, refusals = votes[3 * turn : 3 * turn + 3]
        consist.append(consistency_score(choices, true_name))
        knowledge.append(knowledge_score(scores))
        vote = rejection_vote(refusals)
        report.reject_nulls += vote is None
        reject.append(vote)
        for kind, samples in zip(unparsed, (choices, scores, refusals)):
            unparsed[kind].append(sum(v is None for v in samples))
    messages = [{"role": "system", "content": session.system}] if session.system else []
    for prompt, text in zip(session.prompts, done.answers):
        messages += [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
    record = {k: v for k, v in session.record.items() if k not in RESULT_FIELDS}
    record.update(
        messages=messages, finish_reasons=done.finish_reasons, consist_scores=consist, knowledge_scores=knowledge,
        reject_scores=reject, judge_unparsed=unparsed,
    )
    return record
