"""Builds dialogues tables (the dialogues contract) for the clean-stage tests."""
from __future__ import annotations

import random

import polars as pl

from data_tools.cleaning.schema import DIALOGUES_SCHEMA

ROLES = {
    "en": [("Q935", "Isaac Newton", "English physicist and mathematician"), ("Q7186", "Marie Curie", "Polish-French physicist")],
    "zh": [("Q935", "艾萨克·牛顿", "英国物理学家"), ("Q7186", "玛丽·居里", "波兰裔法国物理学家")],
}

_EN_TOPICS = ["optics", "gravity", "calculus", "alchemy", "the mint", "prisms", "comets", "tides", "motion", "the moon",
              "radium", "polonium", "x-rays", "laboratories", "Warsaw", "Paris", "teaching", "isotopes", "medicine", "war"]
_EN_VERBS = ["study", "admire", "fear", "explain", "measure", "question", "describe", "doubt", "praise", "test"]
_ZH_TOPICS = ["光学", "引力", "微积分", "炼金术", "铸币厂", "棱镜", "彗星", "潮汐", "运动", "月亮", "镭", "钋", "射线", "实验室"]
_ZH_VERBS = ["研究", "欣赏", "解释", "测量", "质疑", "描述", "赞美", "检验"]


def good_turn(lang: str, rng: random.Random) -> tuple[str, str]:
    """A question and an in-character answer that pass every check."""
    if lang == "zh":
        t, u, v = rng.sample(_ZH_TOPICS, 3)
        verb = rng.choice(_ZH_VERBS)
        return (f"你为什么{verb}{t}和{u}？", f"我一生都在{verb}{t}，也常常思考{u}与{v}之间的联系，这让我收获良多。")
    t, u, v = rng.sample(_EN_TOPICS, 3)
    verb = rng.choice(_EN_VERBS)
    return (
        f"Why did you {verb} {t} and {u}?",
        f"I spent many years to {verb} {t}, and I often wondered how {u} relates to {v} in my work.",
    )


def refusal_turn(lang: str, rng: random.Random) -> tuple[str, str]:
    """A contrastive question and an in-character refusal."""
    thing = rng.choice(["smartphones", "the internet", "quantum computers", "jet engines", "television"])
    if lang == "zh":
        thing = rng.choice(["智能手机", "互联网", "量子计算机", "喷气发动机", "电视机"])
        return (f"你怎么看待{thing}？", f"我从未听说过{thing}，在我那个时代并不存在这样的东西。")
    return (f"What do you think of {thing}?", f"I have never heard of {thing}; nothing of the sort existed in my day.")


def session(
    turns: list[tuple[str, str, int, str]],
    *,
    lang: str = "en",
    role: int = 0,
    session_id: str | None = None,
    character_id: str | None = None,
    simulator: str = "smollm2",
    seed: int = 0,
) -> dict[str, object]:
    """One session row; `turns` holds (question, answer, rejection_label, finish_reason)."""
    cid, label, desc = ROLES[lang][role]
    cid = character_id or cid
    system = f"你是{label}，{desc}" if lang == "zh" else f"You are {label}, {desc}"
    messages = []
    for q, a, _, _ in turns:
        messages += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {
        "session_id": session_id or f"{cid}-{lang}-{seed}",
        "character_id": cid,
        "lang": lang,
        "system": system,
        "messages": messages,
        "turn_types": ["contrastive" if r else "role_specific" for _, _, r, _ in turns],
        "rejection_labels": [r for _, _, r, _ in turns],
        "question_sources": [("Q1" if r else cid) for _, _, r, _ in turns],
        "evidence": [([] if r else [f"fact {i}"]) for i, (_, _, r, _) in enumerate(turns)],
        "finish_reasons": [f for _, _, _, f in turns],
        "simulator": simulator,
        "seed": seed,
    }


def good_session(lang: str, rng: random.Random, n: int = 5, **kw: object) -> dict[str, object]:
    turns = []
    for i in range(n):
        q, a = refusal_turn(lang, rng) if i % 3 == 2 else good_turn(lang, rng)
        turns.append((q, a, int(i % 3 == 2), "stop"))
    return session(turns, lang=lang, **kw)


def frame(rows: list[dict[str, object]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema=DIALOGUES_SCHEMA)
