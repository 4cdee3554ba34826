"""Judge-free flags: each clean check on its own, on every answered turn."""
from __future__ import annotations

from data_tools.cleaning.config import CleanConfig
from data_tools.eval.flags import FlagSession, judge_free_flags


def flags_of(answers, labels, *, label="Isaac Newton", lang="en", model="smollm2", cfg=None):
    questions = [f"question {i}?" for i in range(len(answers))]
    (out,) = judge_free_flags([FlagSession(label, "English physicist", lang, questions, answers, labels)], model, cfg)
    return out


def test_each_check_runs_on_its_own():
    ramble = "I studied the stars. " * 10  # the clean stage would call this "repetition" and stop there
    answers = [
        "My laws of motion describe how bodies move when forces act upon them.",  # clean, role-specific
        "I have never heard of such a device, sir.",  # a good refusal on a contrastive turn
        "As an AI language model, I have never heard of it.",  # leaks and refuses
        "I am Albert Einstein, and I do not know your machines.",  # breaks identity and refuses
        ramble + "I do not know what that is.",  # rambles and refuses, beyond the opening window
        "I do not know what you mean by that.",  # refuses at once on a role-specific turn
        "",  # unanswered: no flag at all
    ]
    labels = [0, 1, 1, 1, 0, 0, 1]
    flags = flags_of(answers, labels)
    assert flags["leak_flags"] == [False, False, True, False, False, False, False]
    assert flags["identity_break_flags"] == [False, False, False, True, False, False, False]
    # Contrastive turns: refusing anywhere counts; role-specific turns: only in the opening window.
    assert flags["refusal_flags"] == [False, True, True, True, False, True, False]


def test_model_name_counts_as_a_leak_and_chinese_works():
    flags = flags_of(["I am SmolLM2, glad to help you with physics."], [0])
    assert flags["leak_flags"] == [True]
    zh = flags_of(["作为一个人工智能，我无法扮演牛顿。", "我从未听说过这种东西，在我那个时代并不存在。"], [0, 1], label="艾萨克·牛顿", lang="zh")
    assert zh["leak_flags"] == [True, False] and zh["refusal_flags"] == [False, True]


def test_checks_switched_off_in_the_clean_config_still_measure():
    cfg = CleanConfig(leak_phrases=None, identity_break=None, refusal_window_chars=None)
    flags = flags_of(["As an AI, I do not know."], [1], cfg=cfg)
    assert flags == {"leak_flags": [True], "identity_break_flags": [False], "refusal_flags": [True]}
