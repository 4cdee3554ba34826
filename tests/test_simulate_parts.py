"""The simulation's pure parts: roles, partners, prompts, question parsing, turn plans, retry waits."""
from __future__ import annotations

import dataclasses
import email.utils
import random
import time
from collections import Counter

import polars as pl
import pytest
from ditto_native import DittoError

from data_tools.llm.jsonparse import parse_json_lenient
from data_tools.llm.retry import RetryPolicy, parse_retry_after
from data_tools.simulation import pipeline
from data_tools.simulation.partners import difference, plan_partners, rotation_shifts
from data_tools.simulation.pipeline import SimulationConfig, SimulationReport
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.queries import (
    EVIDENCE_MAX_CHARS, EVIDENCE_MAX_CHARS_ZH, QUESTION_MAX_CHARS, QUESTION_MAX_CHARS_ZH, Question, parse_questions,
    questions_schema, read_questions, string_caps,
)
from data_tools.simulation.roles import Role, first_per_language, parse_year, roles_from_table
from data_tools.simulation.seeding import session_id
from simulate_characters import characters_frame


def role(i: int, cid: str, *, category="human", era=None, domain=(), lang="en", label=None, description="d") -> Role:
    return Role(i, cid, lang, category, label or cid, description, "profile", (), era, frozenset(domain))


# ---- roles -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, year",
    [("551 BCE", -551), ("6th century BCE", -550), ("1879-03-14", 1879), ("14 March 1879", 1879), ("公元前551年", -551),
     ("公元前6世纪", -550), ("19世纪", 1850), ("1879年3月14日", 1879), ("AD 79", 79), ("100 BC", -100), ("unknown", None)],
)
def test_parse_year(text, year):
    assert parse_year(text) == year


def test_roles_from_the_contract_table():
    roles = roles_from_table(characters_frame(), source="chars.parquet")
    assert [r.index for r in roles] == list(range(6))
    confucius = roles[0]
    assert confucius.era == -551 and "philosopher" in confucius.domain
    assert "occupation: philosopher" in confucius.facts
    assert confucius.system_message() == "You are Confucius, Chinese philosopher of the Spring and Autumn period"


def test_system_message_forms():
    assert role(0, "Q1", label="孔子", description="思想家", lang="zh").system_message() == "你是孔子，思想家"
    assert role(0, "Q1", label="孔子", description="", lang="zh").system_message() == "你是孔子。"
    assert role(0, "Q1", label="Ada", description="").system_message() == "You are Ada."


def test_each_fact_appears_once_in_the_prompt():
    """Facts the profile states are not listed again; a profile made of the facts leaves none to list."""
    frame = characters_frame().with_columns(pl.when(pl.col("character_id") == "Q937").then(None).otherwise(pl.col("profile")).alias("profile"))
    roles = {r.character_id: r for r in roles_from_table(frame, source="x")}
    einstein = roles["Q937"]
    assert einstein.profile.startswith("occupation: physicist") and einstein.facts == ()
    confucius = roles["Q4604"]  # the article names the Analects, not the occupations or the birth date
    assert "notable work: Analects" not in confucius.facts
    assert {"occupation: philosopher", "date of birth: 551 BCE"} <= set(confucius.facts)
    for role in roles.values():
        prompt = PromptTemplates().render("query", "en", a=role.prompt_vars(), b=None, k=3)
        for fact in role.facts:
            assert prompt.count(fact) == 1 and fact.split(": ", 1)[1].casefold() not in role.profile.casefold(), fact


def test_limit_counts_per_language():
    en = roles_from_table(characters_frame(), source="x")
    zh = [dataclasses.replace(r, index=r.index + 6, lang="zh") for r in en]
    roles = [*en, *zh]
    assert [(r.character_id, r.lang) for r in first_per_language(roles, 2)] == [
        (en[0].character_id, "en"), (en[1].character_id, "en"), (zh[0].character_id, "zh"), (zh[1].character_id, "zh")]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop("label"), r"chars.parquet: missing column\(s\) label"),
        (lambda f: f.with_columns(pl.when(pl.int_range(pl.len()) == 2).then(pl.lit("")).otherwise(pl.col("label")).alias("label")),
         "chars.parquet: row 2: field label is empty"),
        (lambda f: pl.concat([f, f.head(1)]), r"chars.parquet: row 6: \(Q4604, en\) repeats row 0"),
    ],
)
def test_bad_tables_name_the_row_or_column(change, message):
    with pytest.raises(DittoError, match=message):
        roles_from_table(change(characters_frame()), source="chars.parquet")


# ---- partners ----------------------------------------------------------------------------------


def test_difference_counts_category_era_and_domain():
    a = role(0, "A", era=-500, domain={"philosopher"})
    assert difference(a, role(1, "B", era=-450, domain={"philosopher"})) == 0
    assert difference(a, role(1, "B", category="fictional", era=1900, domain={"detective"})) == 3
    assert difference(a, role(1, "B", era=None, domain=())) == 1.0  # unknowns count half


def test_partners_are_a_seeded_rotation_that_prefers_contrast():
    roles = [role(i, f"H{i}", era=-500 + i, domain={"philosopher"}) for i in range(5)]
    roles += [role(5 + i, f"F{i}", category="fictional", era=1890 + i, domain={"detective"}) for i in range(5)]
    partners = plan_partners(roles, 2, seed=5)
    assert partners == plan_partners(list(reversed(roles)), 2, seed=5)  # the table's order does not matter
    assert partners != plan_partners(roles, 2, seed=6)
    for r in roles:
        assert len(partners[r.index]) == 2 and len({p.index for p in partners[r.index]}) == 2  # distinct
        assert r.index not in {p.index for p in partners[r.index]}  # never itself
    for j in range(2):  # each round is a derangement: every role is B exactly once
        assert sorted(partners[r.index][j].index for r in roles) == [r.index for r in roles]
    first = [difference(r, partners[r.index][0]) for r in roles]
    assert min(first) == 3  # half the order away: the other category, era and field
    assert rotation_shifts(2, 3) == [1, 1, 1] and rotation_shifts(1, 2) == [] and rotation_shifts(6, 2) == [3, 4]


def test_a_role_alone_in_its_language_borrows_from_the_pool():
    lone = role(0, "Z0", lang="zh")
    pool = [lone, role(1, "Z1", lang="zh"), role(2, "E1")]
    assert [p.character_id for p in plan_partners([lone], 1, seed=0, pool=pool)[0]] == ["Z1"]
    assert plan_partners([lone], 1, seed=0) == {0: []}


# ---- prompts -----------------------------------------------------------------------------------


def test_builtin_prompts_in_both_languages():
    t = PromptTemplates()
    vars_a = {"label": "孔子", "description": "思想家", "category": "human", "profile": "孔子是鲁国人。", "facts": ["职业: 教师"]}
    vars_b = {"label": "福尔摩斯", "description": "", "category": "fictional", "profile": "", "facts": []}
    zh = t.render("query", "zh", a=vars_a, b=vars_b, k=3)
    assert "3 个" in zh and "孔子是鲁国人。" in zh and "福尔摩斯" in zh and "- 职业: 教师" in zh
    en = t.render("query", "en", a=vars_a, b=None, k=2)
    assert "Write 2 questions" in en and "must be unable" not in en
    fr = t.render("response", "fr", role=vars_a)
    assert fr.startswith("You are 孔子, 思想家.") and 'code "fr"' in fr
    assert t.source_name("response", "fr") == "builtin:response.en.jinja"
    assert t.source_name("response", "zh") == "builtin:response.zh.jinja"


def test_prompt_override_by_path(tmp_path):
    path = tmp_path / "q.jinja"
    path.write_text("Ask {{ k }} about {{ a.label }} in {{ lang }}.", encoding="utf-8")
    t = PromptTemplates({"query": path})
    assert t.render("query", "zh", a={"label": "Ada"}, b=None, k=4) == "Ask 4 about Ada in zh.\n"
    assert t.source_name("query", "en") == str(path)
    broken = tmp_path / "broken.jinja"
    broken.write_text("{% if %}", encoding="utf-8")
    with pytest.raises(DittoError, match="broken.jinja: not a valid Jinja template"):
        PromptTemplates({"response": broken}).render("response", "en", role={})
    with pytest.raises(DittoError, match="missing.jinja: cannot read query template"):
        PromptTemplates({"query": tmp_path / "missing.jinja"}).render("query", "en")


# ---- question JSON -----------------------------------------------------------------------------


def test_parse_questions_leniently():
    good = '{"questions": [{"question": "Who taught you?", "evidence": ["studied rites"]}, {"question": "Why Lu?", "evidence": "born in Lu"}]}'
    qs = parse_questions(good, "Q1", 3)
    assert [(q.text, q.evidence, q.source) for q in qs] == [("Who taught you?", ("studied rites",), "Q1"), ("Why Lu?", ("born in Lu",), "Q1")]
    fenced = 'Here you go:\n```json\n[{"question": "A?", "evidence": []}, "B?", "b?",]\n```'
    assert [q.text for q in parse_questions(fenced, "Q1", 3)] == ["A?", "B?"]  # "b?" is a duplicate after normalising
    assert len(parse_questions(good, "Q1", 1)) == 1
    for bad in ("no json here", '{"questions": []}', '{"questions": [{"evidence": ["x"]}]}', '{"questions": [{"question": "Who', "[1, 2]"):
        assert parse_questions(bad, "Q1", 3) is None, bad
        assert read_questions(bad, "Q1", 3) == (None, "unparsable_json")


def test_a_string_at_its_cap_fails_the_parse():
    """The grammar closes a string at its cap mid-word: the reply is asked for again, never kept cut."""
    def reply(question: str, evidence: str) -> str:
        return '{"questions": [{"question": "%s", "evidence": ["%s"]}]}' % (question, evidence)

    natural = "Master Kong, when you travelled between the states looking for a ruler who would govern by virtue, what did you learn about power?"
    assert len(natural) < QUESTION_MAX_CHARS and read_questions(reply(natural, "fact"), "Q1", 1)[1] is None
    assert read_questions(reply("x" * QUESTION_MAX_CHARS, "fact"), "Q1", 1) == (None, "string_at_cap")
    assert read_questions(reply("Why?", "y" * EVIDENCE_MAX_CHARS), "Q1", 1) == (None, "string_at_cap")
    item = questions_schema(3)["properties"]["questions"]["items"]["properties"]
    assert item["question"]["maxLength"] == QUESTION_MAX_CHARS and item["evidence"]["items"]["maxLength"] == EVIDENCE_MAX_CHARS
    assert "pattern" not in item["question"]
    zh = questions_schema(3, "zh")["properties"]["questions"]["items"]["properties"]
    assert (zh["question"]["maxLength"], zh["evidence"]["items"]["maxLength"]) == string_caps("zh") == (QUESTION_MAX_CHARS_ZH, EVIDENCE_MAX_CHARS_ZH)
    assert read_questions(reply("你" * QUESTION_MAX_CHARS_ZH, "事实"), "Q1", 1, "zh") == (None, "string_at_cap")
    assert read_questions(reply("你" * (QUESTION_MAX_CHARS_ZH - 1), "事实"), "Q1", 1, "zh")[1] is None


def test_chinese_questions_must_open_in_chinese():
    """The query schema's pattern, compiled by the engine's grammar library on SmolLM2's vocabulary."""
    from ditto_jax.generation.constraints import build_lltokenizer, grammar_for, new_matcher
    from ditto_jax.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("smollm2").tokenizer
    lltokenizer = build_lltokenizer(tokenizer, tokenizer.get_vocab_size(), [2])

    def accepted(lang: str, question: str) -> bool:
        matcher = new_matcher(lltokenizer, grammar_for(json_schema=questions_schema(1, lang)), "test")
        reply = '{"questions": [{"question": "%s", "evidence": ["孔子是鲁国人"]}]}' % question
        ids = tokenizer.encode(reply, add_special_tokens=False).ids
        return matcher.try_consume_tokens(ids) == len(ids) and matcher.is_accepting()

    assert accepted("zh", "你为什么要去鲁国？") and accepted("zh-hant", "《论语》是谁编的？")
    assert not accepted("zh", "Why did you go to Lu?")
    assert accepted("en", "Why did you go to Lu?")


def test_json_lenient():
    assert parse_json_lenient('{"a": 1}') == {"a": 1}
    assert parse_json_lenient('noise {"a": [1, 2,],} trailing') == {"a": [1, 2]}
    assert parse_json_lenient("``` \n[1]\n```") == [1]
    assert parse_json_lenient("{") is None


# ---- turn plans ----------------------------------------------------------------------------------


def _questions(source: str, n: int) -> list[Question]:
    return [Question(f"{source} question {i}?", (f"{source} fact {i}",), source) for i in range(n)]


def test_turn_plan_mixes_own_and_paired_questions():
    roles = [role(i, f"R{i}") for i in range(4)]
    config = SimulationConfig(turns=5, questions_per_pair=3, seed=3)
    # R1 and R2 were paired with R0 (R0 the side that cannot answer); R3 with R1.
    partners = {0: [roles[3]], 1: [roles[0]], 2: [roles[0]], 3: [roles[1]]}
    asked = {(r.index, 0): _questions(r.character_id, 3) for r in roles}
    plan = pipeline.plan_sessions(roles, partners, asked, config, SimulationReport())[0]
    assert len(plan.questions) == 5 and len(plan.turn_types) == 5 and len(plan.pairings) == 5
    kinds = Counter(plan.turn_types)
    assert sorted(kinds.values()) == [2, 3]
    for kind, q, how in zip(plan.turn_types, plan.questions, plan.pairings):
        if kind == "role_specific":
            assert q.source == "R0" and how is None
        else:
            assert q.source in {"R1", "R2"} and how == "paired"
    assert len({q.text for q in plan.questions}) == 5
    again = pipeline.plan_sessions(roles, partners, asked, config, SimulationReport())[0]
    assert again == plan
    other_seed = [pipeline.plan_sessions(roles, partners, asked, SimulationConfig(turns=5, seed=s), SimulationReport())[0] for s in range(8)]
    assert len({tuple(p.turn_types) for p in other_seed}) > 1  # the order is shuffled by seed


def test_turn_plan_records_fallbacks_and_drops():
    roles = [role(i, f"R{i}") for i in range(3)]
    config = SimulationConfig(turns=4, questions_per_pair=3, seed=0)
    partners = {0: [roles[1]], 1: [roles[2]], 2: [roles[1]]}  # nobody paired with R0
    asked = {(r.index, 0): _questions(r.character_id, 3) for r in roles}
    plan = pipeline.plan_sessions(roles, partners, asked, config, SimulationReport())[0]
    contrastive = [(q.source, how) for q, k, how in zip(plan.questions, plan.turn_types, plan.pairings) if k == "contrastive"]
    assert len(contrastive) == 2 and all(src != "R0" and how == "fallback" for src, how in contrastive)

    report = SimulationReport()
    assert pipeline.plan_sessions(roles, partners, {k: v for k, v in asked.items() if k != (0, 0)}, config, report)[0] is None
    assert report.dropped == {("R0", "en"): "no_questions"}

    report = SimulationReport()  # alone in its language, with one question: cannot fill 4 turns
    assert pipeline.plan_sessions([roles[0]], {0: []}, {(0, 0): _questions("R0", 1)}, config, report) == [None]
    assert report.dropped == {("R0", "en"): "not_enough_questions"}


def test_session_id_is_deterministic():
    assert session_id("Q1", "en", 0) == session_id("Q1", "en", 0)
    assert len({session_id("Q1", "en", 0), session_id("Q1", "zh", 0), session_id("Q1", "en", 1), session_id("Q2", "en", 0)}) == 4


# ---- retry waits -------------------------------------------------------------------------------


def test_backoff_has_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(base_delay_s=0.5, max_delay_s=4.0)
    rng = random.Random(0)
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (9, 4.0)):
        waits = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert 0 <= min(waits) and max(waits) <= ceiling
        assert max(waits) - min(waits) > ceiling / 2  # spread out, not a fixed wait
    assert all(policy.delay(1, retry_after_s=3.0, rng=rng) >= 3.0 for _ in range(50))


def test_retry_after_header_forms():
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    now = time.time()
    assert 9 <= parse_retry_after(email.utils.formatdate(now + 10, usegmt=True), now=now) <= 10
    assert parse_retry_after(email.utils.formatdate(now - 10, usegmt=True), now=now) == 0.0


def test_the_builtin_sample_feeds_the_simulation():
    """The characters stage's output is this stage's input: roles, eras, domains and partners from the real sample."""
    from data_tools.characters.build import characters_from_sample
    from data_tools.characters.config import CharactersConfig

    table = characters_from_sample(CharactersConfig(languages=("en", "zh"), per_category=4))
    roles = roles_from_table(table, source="sample")
    assert len(roles) == table.height == 16
    assert {r.lang for r in roles} == {"en", "zh"} and {r.category for r in roles} == {"human", "fictional"}
    assert sum(r.era is not None for r in roles) >= 4 and sum(bool(r.domain) for r in roles) >= 8
    chinese = [r for r in roles if r.lang == "zh"]
    assert all(r.system_message().startswith("你是") for r in chinese)
    partners = plan_partners(roles, 1, seed=0)
    for r in roles:
        [partner] = partners[r.index]
        assert partner.lang == r.lang and partner.character_id != r.character_id
    prompt = PromptTemplates().render("query", "zh", a=chinese[0].prompt_vars(), b=chinese[1].prompt_vars(), k=3)
    assert chinese[0].label in prompt and chinese[1].label in prompt
