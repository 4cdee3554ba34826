"""Judge parsing and scoring on crafted judge outputs, and the re-ask rule."""
from __future__ import annotations

import json

import pytest

from data_tools.eval.judging import (
    REFUSAL_SCHEMA,
    JudgeSettings,
    JudgeStats,
    Question,
    ask_judge,
    consistency_score,
    knowledge_score,
    parse_binary,
    parse_choice,
    parse_score,
    rejection_vote,
)
from data_tools.llm.cache import CallCache
from data_tools.llm.runner import CallRunner
from eval_fixtures import ScriptedBackend

NAMES = ["Ada Lovelace", "Confucius", "Sherlock Holmes", "Holmes Jr"]


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"role": "Confucius"}', "Confucius"),  # the constrained form
        ('```json\n{"role": "confucius"}\n```', "Confucius"),  # fenced, other case
        ('{"role": "[Confucius] Chinese philosopher"}', "Confucius"),  # the candidate's full text
        ('{"role": "Napoleon"}', None),  # not a candidate
        ('{"role": 3}', None),  # malformed value
        ('{"verdict": "Confucius"}', None),  # no known key
        ("Step by step... The most suitable role is [Sherlock Holmes].", "Sherlock Holmes"),  # the paper's form
        ("最符合的角色为[Confucius]", "Confucius"),
        ("The most suitable role is [Confucius]. No wait, the most suitable role is [Ada Lovelace].", None),  # several answers
        ("It sounds like Sherlock Holmes to me.", "Sherlock Holmes"),  # one name mentioned ("Holmes" inside it is no second one)
        ("Either Ada Lovelace or Confucius.", None),  # several names
        ("I cannot tell.", None),
        ("", None),
    ],
)
def test_parse_choice(text, expected):
    assert parse_choice(text, NAMES) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"score": 7}', 7.0),
        ('{"score": "8"}', 8.0),
        ('{"rating": 10}', 10.0),
        ('{"score": 11}', None),  # out of range
        ('{"score": 0}', None),
        ('{"score": true}', None),
        ("The answer is accurate.\n7", 7.0),  # the paper's last-line form
        ("Analysis...\nScore: 6", 6.0),
        ("Solid answer. Rating: [[9]]", 9.0),  # FastChat's form
        ("[[8]] ... on reflection [[5]]", None),  # several answers
        ("[[8]] and again [[8]]", 8.0),  # the same answer twice is one answer
        ("[[12]]", None),
        ("I would give it a 7 or an 8", None),
        ("Score: 4/10", 4.0),
        ("no number here", None),
    ],
)
def test_parse_score(text, expected):
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"refused": 1}', 1),
        ('{"refused": 0}', 0),
        ('{"refused": true}', 1),
        ('{"refused": 2}', None),  # out of range
        ('{"refused": "maybe"}', None),
        ("1", 1),
        (" 0. ", 0),
        ("0 or 1", None),  # several answers
        ("Yes, it refuses.", None),
    ],
)
def test_parse_binary(text, expected):
    assert parse_binary(text) == expected


def test_scores_follow_the_paper():
    # consistency: mean over parsed samples; 0 when none parse
    assert consistency_score(["Confucius", "Confucius", "Ada Lovelace"], "Confucius") == pytest.approx(2 / 3)
    assert consistency_score(["Confucius", None, None], "Confucius") == 1.0
    assert consistency_score([None, None, None], "Confucius") == 0.0
    # knowledge: mean of parsed; None when none parse
    assert knowledge_score([7.0, None, 9.0]) == 8.0
    assert knowledge_score([None, None]) is None
    # rejection: majority vote; tie or nothing parsed -> None
    assert rejection_vote([1, 1, 0]) == 1
    assert rejection_vote([0, None, None]) == 0
    assert rejection_vote([1, 0, None]) is None  # tie
    assert rejection_vote([1, 0]) is None
    assert rejection_vote([None, None, None]) is None


def test_unparsable_samples_are_asked_again_then_counted(tmp_path):
    """Sample 0 parses at once, sample 1 parses on its re-ask, sample 2 never does: asked twice, then counted."""
    replies = {}

    def reply(request):
        key = (request.sample_index, request.seed)
        replies.setdefault(request.sample_index, []).append(key)
        tries = len(replies[request.sample_index])
        if request.sample_index == 0:
            return '{"refused": 1}'
        if request.sample_index == 1:
            return "hmm" if tries == 1 else '{"refused": 0}'
        return "I will not say"

    backend = ScriptedBackend(reply)
    settings = JudgeSettings(samples=3, retries=1)
    stats = JudgeStats()
    with CallCache(tmp_path / "calls.sqlite") as cache:
        runner = CallRunner(backend, cache)
        question = Question(("rejection", "s", 0), "Did it refuse?", REFUSAL_SCHEMA, parse_binary)
        values = ask_judge([question], runner, settings, stats)
        assert values == [[1, 0, None]]
        assert (stats.asked, stats.reasked, dict(stats.unparsable), stats.failed_calls) == (3, 2, {"rejection": 1}, 0)
        assert len(backend.seen) == 5
        assert all(r.json_schema == REFUSAL_SCHEMA for r in backend.seen)  # constrained
        assert len({r.seed for r in backend.seen}) == 5  # every re-ask is a new sample
        # The same judgement again comes from the cache: no call is made twice.
        again = ask_judge([question], CallRunner(backend, cache), settings, JudgeStats())
        assert again == values and len(backend.seen) == 5


def test_free_text_mode_sends_no_schema(tmp_path):
    backend = ScriptedBackend(lambda r: "1")
    with CallCache(tmp_path / "calls.sqlite") as cache:
        values = ask_judge(
            [Question(("rejection", "s", 0), "p", REFUSAL_SCHEMA, parse_binary)], CallRunner(backend, cache),
            JudgeSettings(samples=2, constrained=False), JudgeStats(),
        )
    assert values == [[1, 1]] and all(r.json_schema is None for r in backend.seen)
    assert json.dumps(values)  # plain JSON values for the results file
