"""Every reason code on crafted English and Chinese sessions, through the stage."""
from __future__ import annotations

import random

import polars as pl
import pytest
from ditto_native import REASON_CODES

from clean_factory import frame, good_session, good_turn, refusal_turn, session
from data_tools.cleaning import CleanConfig, clean_dialogues

RNG_SEED = 7


def _turns(lang: str, n: int = 4) -> list[tuple[str, str, int, str]]:
    rng = random.Random(RNG_SEED)
    return [(*good_turn(lang, rng), 0, "stop") for _ in range(n)]


def _one_bad(lang: str, bad: tuple[str, str, int, str], at: int = 2, **kw) -> pl.DataFrame:
    turns = _turns(lang)
    turns.insert(at, bad)
    return frame([session(turns, lang=lang, **kw)])


def _rows(q: pl.DataFrame) -> list[tuple[str, int | None, str]]:
    return list(zip(q["level"], q["turn_index"], q["reason"]))


def test_reason_codes_are_the_contract():
    assert REASON_CODES == (
        "empty_turn", "too_short", "too_long", "repetition", "assistant_leak", "identity_break",
        "label_mismatch", "language_mismatch", "truncated", "exact_duplicate", "near_duplicate",
    )


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_good_sessions_pass_untouched(lang):
    rng = random.Random(1)
    df = frame([good_session(lang, rng, role=r, seed=r) for r in (0, 1)])
    r = clean_dialogues(df)
    assert r.quarantine.height == 0, r.quarantine.select("reason", "detail").to_dicts()
    assert r.clean.equals(df)


EN_CASES = {
    "empty_turn": ("What did you see?", "   ", 0, "stop"),
    "truncated": ("What did you see?", "I saw the light split into many colours and then", 0, "length"),
    "too_short": ("What did you see?", "Light.", 0, "stop"),
    "too_long": ("What did you see?", "colour and light " * 500, 0, "stop"),
    "language_mismatch": ("What did you see?", "我看到光分成了许多种颜色。", 0, "stop"),
    "assistant_leak": ("What did you see?", "As an AI language model, I cannot see anything at all.", 0, "stop"),
    "identity_break": ("Who are you?", "I am Albert Einstein, and I think about relativity.", 0, "stop"),
    "repetition": ("What did you see?", "I saw the light. " * 12, 0, "stop"),
    "label_mismatch": ("What is a smartphone?", "It is my favourite instrument for studying the heavens.", 1, "stop"),
}
ZH_CASES = {
    "empty_turn": ("你看到了什么？", "", 0, "stop"),
    "truncated": ("你看到了什么？", "我看到光被分成了许多种颜色，然后", 0, "length"),
    "too_short": ("你看到了什么？", "光。", 0, "stop"),
    "too_long": ("你看到了什么？", "光与颜色的奥秘" * 1200, 0, "stop"),
    "language_mismatch": ("你看到了什么？", "I saw the light split into many colours.", 0, "stop"),
    "assistant_leak": ("你看到了什么？", "作为一个人工智能，我其实什么也看不到。", 0, "stop"),
    "identity_break": ("你是谁？", "我叫爱因斯坦，一直在思考相对论。", 0, "stop"),
    "repetition": ("你看到了什么？", "我看到了光。" * 8, 0, "stop"),
    "label_mismatch": ("什么是智能手机？", "那是我最喜欢的观测天空的仪器。", 1, "stop"),
}


@pytest.mark.parametrize("lang,reason,bad", [("en", k, v) for k, v in EN_CASES.items()] + [("zh", k, v) for k, v in ZH_CASES.items()])
def test_each_turn_reason(lang, reason, bad):
    r = clean_dialogues(_one_bad(lang, bad))
    assert _rows(r.quarantine) == [("turn", 2, reason)], r.quarantine["detail"].to_list()
    assert r.clean["messages"].list.len().to_list() == [8]
    q = r.quarantine.row(0, named=True)
    assert q["messages"][1]["content"] == bad[1] and q["finish_reasons"] == [bad[3]]


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_role_specific_turn_that_refuses(lang):
    q, a = refusal_turn(lang, random.Random(3))
    r = clean_dialogues(_one_bad(lang, (q, a, 0, "stop")))
    assert _rows(r.quarantine) == [("turn", 2, "label_mismatch")]
    assert "role-specific turn refuses" in r.quarantine["detail"][0]


@pytest.mark.parametrize(
    "simulator,answer",
    [
        ("Qwen/Qwen2.5-72B-Instruct", "I am Qwen2.5, and I can tell you all about the heavens."),
        ("/models/SmolLM2-135M-Instruct.Q4_1.gguf", "我是SmolLM2，我可以告诉你关于天空的一切。"),
    ],
)
def test_simulator_name_is_a_leak(simulator, answer):
    lang = "zh" if "我" in answer else "en"
    r = clean_dialogues(_one_bad(lang, ("Who are you?" if lang == "en" else "你是谁？", answer, 0, "stop"), simulator=simulator))
    assert _rows(r.quarantine) == [("turn", 2, "assistant_leak")]


@pytest.mark.parametrize(
    "lang,answer",
    [
        ("en", "I am Sir Isaac Newton, Lucasian Professor at Cambridge."),
        ("en", "My name is Newton, and I served as Master of the Mint."),
        ("en", "I am English by birth and Lucasian Professor by office."),
        ("zh", "我是艾萨克·牛顿，一生研究光学与引力。"),
        ("zh", "我叫牛顿，一生研究光学与引力。"),
        ("zh", "我是一个喜欢思考的人，一生研究光学。"),
    ],
)
def test_identity_keeps_the_role_itself(lang, answer):
    q = "Who are you?" if lang == "en" else "你是谁？"
    r = clean_dialogues(_one_bad(lang, (q, answer, 0, "stop")))
    assert r.quarantine.height == 0, r.quarantine["detail"].to_list()


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_duplicate_questions_within_a_character(lang):
    turns = _turns(lang)
    q, a = turns[0][0], turns[1][1]
    near_q = q.replace("?", "??").replace("？", "？？") + (" then" if lang == "en" else "呢")
    turns += [(q, a, 0, "stop"), (near_q, turns[2][1], 0, "stop")]
    r = clean_dialogues(frame([session(turns, lang=lang)]))
    assert _rows(r.quarantine) == [("turn", 4, "exact_duplicate"), ("turn", 5, "near_duplicate")]
    assert r.quarantine["detail"][0].endswith("turn 0")
    # The same question asked of another character is not a duplicate.
    rng = random.Random(99)
    other = session([(q, a, 0, "stop"), *[(*good_turn(lang, rng), 0, "stop") for _ in range(3)]], lang=lang, role=1)
    r = clean_dialogues(frame([session(turns[:4], lang=lang), other]))
    assert r.quarantine.height == 0


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_duplicate_sessions(lang):
    rng = random.Random(5)
    a = good_session(lang, rng, session_id="a", character_id="Q1")
    b = dict(a, session_id="b", character_id="Q2")
    c = dict(a, session_id="c", character_id="Q3")
    msgs = [dict(m) for m in a["messages"]]
    msgs[-1]["content"] = msgs[-1]["content"] + (" Indeed." if lang == "en" else "确实如此。")
    c["messages"] = msgs
    d = good_session(lang, rng, session_id="d", character_id="Q4")
    r = clean_dialogues(frame([a, b, c, d]))
    assert r.clean["session_id"].to_list() == ["a", "d"]
    assert list(zip(r.quarantine["session_id"], r.quarantine["level"], r.quarantine["reason"])) == [
        ("b", "session", "exact_duplicate"),
        ("c", "session", "near_duplicate"),
    ]
    assert r.quarantine["turn_index"].is_null().all()
    assert "session a" in r.quarantine["detail"][1]


def test_checks_can_be_turned_off():
    bad = EN_CASES["too_short"]
    cfg = CleanConfig(min_answer_chars=None)
    assert clean_dialogues(_one_bad("en", bad), cfg).quarantine.height == 0
    leak = EN_CASES["assistant_leak"]
    assert clean_dialogues(_one_bad("en", leak), CleanConfig(leak_phrases=None)).quarantine.height == 0
    extra = ("What did you see?", "Verily the apple fell upon my head in the orchard.", 0, "stop")
    r = clean_dialogues(_one_bad("en", extra), CleanConfig(leak_phrases=("verily",)))
    assert _rows(r.quarantine) == [("turn", 2, "assistant_leak")]
