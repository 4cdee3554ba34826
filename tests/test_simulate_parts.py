"""The simulation's pure parts: roles, partners, prompts, question parsing, turn plans, retry waits."""
from __future__ import annotations

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
from data_tools.simulation.partners import choose_partners, difference
from data_tools.simulation.pipeline import SimulationConfig, SimulationReport
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.queries import Question, parse_questions, questions_schema
from data_tools.simulation.roles import Role, parse_year, roles_from_table
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


def test_profile_falls_back_to_facts_and_is_cut():
    frame = characters_frame().with_columns(pl.when(pl.col("character_id") == "Q937").then(None).otherwise(pl.col("profile")).alias("profile"))
    roles = roles_from_table(frame, source="x", profile_chars=120)
    einstein = next(r for r in roles if r.character_id == "Q937")
    assert einstein.profile.startswith("occupation: physicist")
    assert all(len(r.profile) <= 120 for r in roles)


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


def test_partner_choice_is_seeded_and_prefers_contrast():
    a = role(0, "A", era=-500, domain={"philosopher"})
    alike = role(1, "alike", era=-480, domain={"philosopher"})
    unlike = role(2, "unlike", category="fictional", era=1890, domain={"detective"})
    pool = [a, alike, unlike]
    assert choose_partners(a, pool, 1, seed=5) == choose_partners(a, pool, 1, seed=5)
    picks = Counter(choose_partners(a, pool, 1, seed=s)[0].character_id for s in range(300))
    assert picks["unlike"] > 270  # weight 64 against 1
    assert set(picks) <= {"alike", "unlike"}  # never itself
    two = choose_partners(a, pool, 2, seed=1)
    assert {p.character_id for p in two} == {"alike", "unlike"}  # distinct while there are enough
    assert len(choose_partners(a, pool, 5, seed=1)) == 5
    assert choose_partners(a, [a], 1, seed=1) == []


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


def test_json_lenient():
    assert parse_json_lenient('{"a": 1}') == {"a": 1}
    assert parse_json_lenient('noise {"a": [1, 2,],} trailing') == {"a": [1, 2]}
    assert parse_json_lenient("``` \n[1]\n```") == [1]
    assert parse_json_lenient("{") is None


def test_questions_schema_bounds_strings_by_token_budget():
    def cap(schema):
        item = schema["properties"]["questions"]["items"]["properties"]
        return item["question"]["maxLength"], item["evidence"]["items"]["maxLength"]

    assert cap(questions_schema(3, 768)) == (160, 160)
    assert cap(questions_schema(1, 96)) == (76, 76)  # (96 - 20 JSON tokens) * 3 chars / 3 strings
    assert cap(questions_schema(3, 256)) == (70, 70)
    assert cap(questions_schema(3, 16)) == (48, 48)
    assert questions_schema(2)["properties"]["questions"]["minItems"] == 2


# ---- turn plans ----------------------------------------------------------------------------------


def _questions(source: str, n: int) -> list[Question]:
    return [Question(f"{source} question {i}?", (f"{source} fact {i}",), source) for i in range(n)]


def test_turn_plan_mixes_own_and_paired_questions():
    roles = [role(i, f"R{i}") for i in range(4)]
    config = SimulationConfig(turns=5, questions_per_pair=3, seed=3)
    # R1 and R2 were paired with R0 (R0 the side that cannot answer); R3 with R1.
    pairs = [(roles[0], 0, roles[3]), (roles[1], 0, roles[0]), (roles[2], 0, roles[0]), (roles[3], 0, roles[1])]
    asked = {(r.index, 0): _questions(r.character_id, 3) for r in roles}
    report = SimulationReport()
    plan = pipeline._plan_turns(roles[0], pairs, asked, roles, config, report)
    assert len(plan.questions) == 5 and len(plan.turn_types) == 5
    kinds = Counter(plan.turn_types)
    assert sorted(kinds.values()) == [2, 3]
    for kind, q in zip(plan.turn_types, plan.questions):
        if kind == "role_specific":
            assert q.source == "R0"
        else:
            assert q.source in {"R1", "R2"}  # paired questions come before any fallback
    assert len({q.text for q in plan.questions}) == 5
    again = pipeline._plan_turns(roles[0], pairs, asked, roles, config, SimulationReport())
    assert again.questions == plan.questions and again.turn_types == plan.turn_types
    other_seed = [pipeline._plan_turns(roles[0], pairs, asked, roles, SimulationConfig(turns=5, seed=s), SimulationReport()) for s in range(8)]
    assert len({tuple(p.turn_types) for p in other_seed}) > 1  # the order is shuffled by seed


def test_turn_plan_falls_back_and_drops():
    roles = [role(i, f"R{i}") for i in range(3)]
    config = SimulationConfig(turns=4, questions_per_pair=3, seed=0)
    pairs = [(roles[0], 0, roles[1]), (roles[1], 0, roles[2]), (roles[2], 0, roles[1])]  # nobody paired with R0
    asked = {(r.index, 0): _questions(r.character_id, 3) for r in roles}
    plan = pipeline._plan_turns(roles[0], pairs, asked, roles, config, SimulationReport())
    assert [q.source for q, k in zip(plan.questions, plan.turn_types) if k == "contrastive"]  # from other roles
    assert Counter(plan.turn_types) == {"role_specific": 2, "contrastive": 2}

    report = SimulationReport()
    assert pipeline._plan_turns(roles[0], pairs, {k: v for k, v in asked.items() if k != (0, 0)}, roles, config, report) is None
    assert report.dropped == {("R0", "en"): "no_questions"}

    report = SimulationReport()  # alone in its language, with one question: cannot fill 4 turns
    assert pipeline._plan_turns(roles[0], [], {(0, 0): _questions("R0", 1)}, [roles[0]], config, report) is None
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
    for r in roles:
        [partner] = choose_partners(r, [x for x in roles if x.lang == r.lang], 1, seed=0)
        assert partner.lang == r.lang and partner.character_id != r.character_id
    prompt = PromptTemplates().render("query", "zh", a=chinese[0].prompt_vars(), b=chinese[1].prompt_vars(), k=3)
    assert chinese[0].label in prompt and chinese[1].label in prompt
