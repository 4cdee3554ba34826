"""`ditto-eval mtbench`: MT-Bench's roleplay category, single-answer grading.

Questions come in FastChat's `question.jsonl` format: one object per line
with `question_id`, `category` and `turns` (two user turns). Only the
`roleplay` category is kept unless told otherwise. The model answers both
turns as one conversation; the judge grades each answer from 1 to 10, the
second with both turns in view, and a question scores the mean over its
turns. A judge's rating is read from JSON ({"rating": 7}, what the built-in
prompts ask for under a schema) or FastChat's "[[7]]".

Output: one record per question, in input order, with `answers`,
`finish_reasons`, `turn_scores` (None where no sample parsed), `score`
(mean over scored turns), `judge_unparsed`, `model`, `judge`.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ditto_native import DittoError

from data_tools.eval.answer import AnswerSettings, Conversation, answer_conversations
from data_tools.eval.judging import RATING_SCHEMA, JudgeSettings, JudgeStats, Question, ask_judge, mean_parsed, parse_score
from data_tools.eval.prompts import EvalPrompts
from data_tools.eval.records import read_jsonl
from data_tools.llm.runner import CallRunner

MAX_TURNS = 2  # MT-Bench questions have two turns; the second judge prompt shows both


@dataclasses.dataclass(frozen=True)
class MtQuestion:
    line: int
    question_id: Any
    category: str | None
    turns: tuple[str, ...]


def load_questions(path: str | Path, category: str | None = "roleplay") -> list[MtQuestion]:
    """Questions of `category` (all when None); raises DittoError naming the line and field at fault."""
    questions = []
    for line, record in read_jsonl(path):
        where = f"{path}: line {line}"
        if "question_id" not in record:
            raise DittoError(f"{where}: missing field 'question_id'")
        turns = record.get("turns")
        if turns is None:
            raise DittoError(f"{where}: missing field 'turns'")
        if not isinstance(turns, list) or not 1 <= len(turns) <= MAX_TURNS or not all(isinstance(t, str) and t.strip() for t in turns):
            raise DittoError(f"{where}: field 'turns' must be a list of 1 or {MAX_TURNS} non-empty strings")
        cat = record.get("category")
        if category is None or cat is None or cat == category:
            questions.append(MtQuestion(line, record["question_id"], cat, tuple(turns)))
    if not questions:
        raise DittoError(f"{path}: no questions" + (f" in category {category!r}" if category else ""))
    return questions


def run_mtbench(
    questions: Sequence[MtQuestion],
    model_runner: CallRunner,
    judge_runner: CallRunner,
    prompts: EvalPrompts,
    *,
    answer: AnswerSettings,
    judge: JudgeSettings,
    model_label: str | None = None,
) -> tuple[list[dict[str, Any]], JudgeStats]:
    answered = answer_conversations(
        [Conversation(f"mtbench:{q.question_id}", None, q.turns) for q in questions], model_runner, answer, "native"
    )
    asks: list[Question] = []
    for q, done in zip(questions, answered):
        a = done.answers
        asks.append(Question(("mtbench", q.question_id, 0), prompts.render("mtbench_judge", "en", question=q.turns[0], answer=a[0]), RATING_SCHEMA, parse_score))
        if len(q.turns) > 1:
            text = prompts.render("mtbench_judge_multi", "en", question_1=q.turns[0], answer_1=a[0], question_2=q.turns[1], answer_2=a[1])
            asks.append(Question(("mtbench", q.question_id, 1), text, RATING_SCHEMA, parse_score))
    stats = JudgeStats()
    values = ask_judge(asks, judge_runner, judge, stats)
    records = []
    start = 0
    for q, done in zip(questions, answered):
        samples = values[start : start + len(q.turns)]
        start += len(q.turns)
        turn_scores = [mean_parsed(s) for s in samples]
        scored = [s for s in turn_scores if s is not None]
        records.append(
            {
                "question_id": q.question_id, "category": q.category, "turns": list(q.turns), "answers": done.answers,
                "finish_reasons": done.finish_reasons, "turn_scores": turn_scores,
                "score": sum(scored) / len(scored) if scored else None,
                "judge_unparsed": [sum(v is None for v in s) for s in samples],
                "model": model_label or model_runner.backend.model_name, "judge": judge_runner.backend.model_name,
                "judge_samples": judge.samples,
            }
        )
    return records, stats
