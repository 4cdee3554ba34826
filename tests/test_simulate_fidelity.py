"""Simulation fidelity against a deterministic loopback peer: pairing, evidence, placeholders, trimming, scale.

The peer (tests/loopback_llm.py) answers at once and the same way every
time, so these tests check the client's method, not a model's quality.
"""
from __future__ import annotations

import dataclasses
import json
import random
import re
import time
from collections import Counter

import polars as pl
import pytest

from data_tools.characters.build import characters_from_sample
from data_tools.characters.config import CharactersConfig
from data_tools.cleaning import CleanConfig, clean_dialogues
from data_tools.cli import main
from data_tools.llm.cache import CallCache
from data_tools.llm.http_backend import HttpBackend
from data_tools.llm.runner import CallRunner
from data_tools.simulation.evidence import VERIFY_THRESHOLD, Material
from data_tools.simulation.partners import plan_partners
from data_tools.simulation.pipeline import SimulationConfig, SimulationReport, plan_sessions, simulate
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.queries import Question
from data_tools.simulation.roles import Role, first_per_language, roles_from_table
from loopback_llm import LoopbackLLM, default_reply


def sample_roles(per_language: int) -> list[Role]:
    table = characters_from_sample(CharactersConfig(languages=("en", "zh"), per_category=None, profile_chars=600))
    return first_per_language(roles_from_table(table, source="sample"), per_language)


def run_simulation(roles, tmp_path, respond=None, **config):
    with LoopbackLLM(respond) as llm:
        backend = HttpBackend([llm.url], "loopback", concurrency=8)
        with CallCache(tmp_path / "calls.sqlite") as cache:
            runner = CallRunner(backend, cache)
            frame, report = simulate(roles, runner, PromptTemplates(), SimulationConfig(**config), partner_pool=roles)
        backend.close()
    return frame, report, llm.seen


def _longest_label(text: str, labels: dict[str, str], template: str) -> str | None:
    found = [label for label in labels if template.format(label) in text]
    return labels[max(found, key=len)] if found else None


def asked_pairs(seen: list[dict], roles: list[Role]) -> set[tuple[str, str, str]]:
    """(A, B, lang) for every query prompt: A wrote questions that B cannot answer."""
    pairs = set()
    for body in seen:
        if "response_format" not in body:
            continue
        prompt = body["messages"][-1]["content"]
        lang = "zh" if prompt.startswith("关于") else "en"
        labels = {r.label: r.character_id for r in roles if r.lang == lang}
        head = prompt.split("\n")[0]
        task = prompt.split("请写出" if lang == "zh" else "\nWrite ", 1)[1]  # past the material, which may name others
        a = _longest_label(head, labels, "关于{}" if lang == "zh" else "Material about {}")
        b = _longest_label(task, labels, "，而{}" if lang == "zh" else ", but {}")
        pairs.add((a, b, lang))
    return pairs


NO_DEDUPE = dict(exact_dedupe_questions=None, question_near_dup_threshold=None, exact_dedupe_sessions=None,
                 session_near_dup_threshold=None)  # the loopback peer's texts differ by a digest only


# ---- pairing ------------------------------------------------------------------------------------


def test_contrastive_turns_come_from_questions_written_with_this_role_as_partner(tmp_path):
    roles = sample_roles(40)
    assert Counter(r.lang for r in roles) == {"en": 40, "zh": 40}
    frame, report, seen = run_simulation(roles, tmp_path)  # the defaults: 5 turns, k = 3
    assert frame.height == 80 and not report.dropped
    asked = asked_pairs(seen, roles)
    assert len(asked) == 80 and all(a and b and a != b for a, b, _ in asked)
    assert Counter(b for _, b, _ in asked) == Counter(r.character_id for r in roles)  # everyone is B once
    kinds = Counter()
    for row in frame.iter_rows(named=True):
        for kind, source, how in zip(row["turn_types"], row["question_sources"], row["pairings"]):
            if kind == "contrastive":
                kinds[how] += 1
                assert (source, row["character_id"], row["lang"]) in asked, (row["character_id"], source)
            else:
                assert how is None and source == row["character_id"]
    assert kinds["paired"] / sum(kinds.values()) >= 0.95
    for lang in ("en", "zh"):
        assert report.by_lang[lang].contrastive_paired == kinds_for(frame, lang)["paired"]


def test_windows_change_nothing_but_what_is_held(tmp_path, monkeypatch):
    """Calls go out a window at a time (flat memory at scale); tiny windows give the same sessions and report."""
    from data_tools.simulation import pipeline

    roles = sample_roles(6)
    whole, whole_report, _ = run_simulation(roles, tmp_path / "whole")
    monkeypatch.setattr(pipeline, "QUERY_WINDOW", 5)
    monkeypatch.setattr(pipeline, "ANSWER_WINDOW", 4)
    windowed, windowed_report, seen = run_simulation(roles, tmp_path / "windowed")
    assert whole.height == 12 and windowed.equals(whole)
    assert windowed_report.to_dict() == whole_report.to_dict()
    assert len(seen) == whole_report.query_calls + whole_report.turns  # each call made once


def kinds_for(frame: pl.DataFrame, lang: str) -> Counter:
    return Counter(frame.filter(pl.col("lang") == lang)["pairings"].explode().drop_nulls().to_list())


def test_a_role_whose_partners_wrote_nothing_gets_recorded_fallbacks(tmp_path):
    roles = sample_roles(10)
    silent = {roles[0].label, roles[10].label}  # their query replies never parse

    def respond(body):
        prompt = body["messages"][-1]["content"]
        if "response_format" in body and any(prompt.startswith((f"Material about {s}", f"关于{s}")) for s in silent):
            return "I would rather not write JSON today.", "stop"
        return None

    frame, report, seen = run_simulation(roles, tmp_path, respond)
    assert report.query_failures == {"unparsable_json": 2} and report.query_retries == 4
    asked = asked_pairs(seen, roles)
    fallback = 0
    for row in frame.iter_rows(named=True):
        for kind, source, how in zip(row["turn_types"], row["question_sources"], row["pairings"]):
            if how == "fallback":
                fallback += 1
                assert (source, row["character_id"], row["lang"]) not in asked
            elif kind == "contrastive":
                assert how == "paired" and (source, row["character_id"], row["lang"]) in asked
    assert fallback >= 2  # the silent roles' partners B
    assert fallback == sum(r.contrastive_fallback for r in report.by_lang.values())


# ---- planning at scale ----------------------------------------------------------------------------


def synthetic_roles(n: int) -> list[Role]:
    rng = random.Random(0)
    roles = []
    for i in range(n):
        lang = "en" if i % 2 else "zh"
        roles.append(Role(
            i, f"Q{i}", lang, rng.choice(["human", "fictional"]), f"L{i}", "", "", (),
            rng.choice([None, rng.randrange(-500, 2000)]), frozenset({rng.choice(["war", "art", "science", "myth"])}),
        ))
    return roles


def plan_of(roles: list[Role], config: SimulationConfig):
    partners = plan_partners(roles, config.query_calls_per_role, config.seed)
    asked = {(r.index, j): [Question(f"{r.character_id} q{j}.{i}?", (), r.character_id) for i in range(config.questions_per_pair)]
             for r in roles for j in range(config.query_calls_per_role)}
    plans = plan_sessions(roles, partners, asked, config, SimulationReport())
    return {p.role.character_id: (p.turn_types, [q.text for q in p.questions], p.pairings) for p in plans if p}


def test_planning_100k_roles_is_deterministic_and_fast():
    roles = synthetic_roles(100_000)
    config = SimulationConfig()
    start = time.process_time()  # CPU time: the shared test machines' load would swamp wall time
    plan = plan_of(roles, config)  # (the synthetic questions are built inside; they are not planning, but cheap)
    seconds = time.process_time() - start
    shuffled = roles[:]
    random.Random(1).shuffle(shuffled)
    resorted = sorted(shuffled, key=lambda r: r.index)
    assert plan_of(resorted, config) == plan
    assert len(plan) == len(roles)
    pairings = Counter(p for _, _, ps in plan.values() for p in ps if p)
    assert pairings == {"paired": pairings["paired"]}  # every question parsed: all contrastive turns paired
    assert seconds < 30, f"planning 100k roles took {seconds:.1f}s"


# ---- evidence -------------------------------------------------------------------------------------


def test_evidence_copied_verifies_invented_does_not():
    en = Material("Confucius taught in the state of Lu that good government rests on personal virtue. "
                  "His students collected his sayings in the Analects.", ["date of birth: 551 BCE"])
    assert en.verifies("His students collected his sayings in the Analects.")
    assert en.verifies("Good government rests on personal virtue")  # a light paraphrase
    assert en.verifies("date of birth: 551 BCE")
    assert not en.verifies("He invented the printing press in Mainz.")
    assert not en.verifies("<a supporting fact from the material>")
    assert not en.verifies("the")  # no content tokens
    zh = Material("孔子名丘，字仲尼，是春秋时期鲁国人。他的弟子把他的言论编成《论语》。", ["出生日期: 公元前551年"])
    assert zh.verifies("他的弟子把他的言论编成《论语》")
    assert zh.verifies("孔子是鲁国人")
    assert zh.verifies("出生日期：公元前551年")
    assert not zh.verifies("他发明了蒸汽机，住在伦敦。")
    assert zh.score("孔子是鲁国人") >= VERIFY_THRESHOLD > zh.score("他在北京上大学")


def test_unverified_evidence_is_removed_and_counted(tmp_path):
    roles = sample_roles(8)

    def respond(body):  # half the questions carry invented evidence, one in four only invented evidence
        if "response_format" not in body:
            return None
        data = json.loads(default_reply(body)[0])
        for i, q in enumerate(data["questions"]):
            if i == 0:
                q["evidence"] = ["I flew a jet aeroplane to the Moon in 1999."]
            elif i == 1:
                q["evidence"] = q["evidence"] + ["我在2020年发明了智能手机。"]
        return json.dumps(data, ensure_ascii=False), "stop"

    frame, report, _ = run_simulation(roles, tmp_path, respond, questions_per_pair=3)
    for lang in ("en", "zh"):
        r = report.by_lang[lang]
        assert r.questions_asked == 8 * 3
        assert r.evidence_checked == 8 * 4 and r.evidence_verified == 8 * 2
        assert r.questions_unverified == 8  # kept, but counted
        assert r.to_dict()["evidence_verified_rate"] == 0.5
    evidence = [e for row in frame["evidence"].to_list() for turn in row for e in turn]
    assert evidence and not any("Moon" in e or "智能手机" in e for e in evidence)


# ---- placeholders -----------------------------------------------------------------------------------


def test_copied_placeholders_are_quarantined_as_prompt_echo(tmp_path):
    roles = sample_roles(6)

    def respond(body):  # copies placeholders and scaffolding, as small models did
        if "response_format" in body:
            data = json.loads(default_reply(body)[0])
            data["questions"][0]["question"] = f"<a question for {roles[0].label}>"
            data["questions"][1]["evidence"] = ["<a supporting fact from the material>"]
            return json.dumps(data, ensure_ascii=False), "stop"
        if body["messages"][-1]["content"].startswith("Question 2"):
            return "Stay in this role from the first word to the last. I am here.", "stop"
        return None

    frame, _, _ = run_simulation(roles, tmp_path, respond, turns=4)
    config = CleanConfig(min_script_ratio=None, refusal_window_chars=None, **NO_DEDUPE)
    result = clean_dialogues(frame, config)
    echo = result.quarantine.filter(pl.col("reason") == "prompt_echo")
    details = " ".join(echo["detail"].to_list())
    for what in ("question repeats prompt text '<a question for", "answer repeats prompt text 'stay in this role"):
        assert what in details, what
    evidence = json.dumps(frame["evidence"].to_list())
    assert "<a supporting fact" not in evidence  # it never verified, so the simulation already removed it
    text = json.dumps(result.clean["messages"].to_list(), ensure_ascii=False).lower()
    assert "<a question for" not in text and "stay in this role" not in text


def test_prompt_echo_checks_questions_answers_and_evidence_only_for_scaffolding():
    from clean_factory import frame, good_turn, session

    rng = random.Random(3)
    turns = [(*good_turn("en", rng), 0, "stop") for _ in range(6)]
    turns[1] = ("<a question for Albert Einstein>", turns[1][1], 0, "stop")
    turns[2] = (turns[2][0], "I must take facts from your memories, as you say.", 0, "stop")
    turns[4] = (turns[4][0], "Your memories are of your life, my friend, and of the sea.", 0, "stop")  # no full phrase
    row = session(turns, session_id="s")
    row["evidence"][3] = ["<a supporting fact from the material>"]
    result = clean_dialogues(frame([row]), CleanConfig(min_script_ratio=None))
    q = result.quarantine.filter(pl.col("reason") == "prompt_echo").sort("turn_index")
    assert q["turn_index"].to_list() == [1, 2, 3]
    assert [d.split(" repeats")[0] for d in q["detail"]] == ["question", "answer", "evidence"]
    assert result.clean.height == 1 and len(result.clean["messages"][0]) == 6  # the honest turns stay
    off = clean_dialogues(frame([row]), CleanConfig(min_script_ratio=None, prompt_echo=None))
    assert "prompt_echo" not in off.quarantine["reason"].to_list()


# ---- pairings in clean ----------------------------------------------------------------------------


def test_clean_drops_fallback_turns_unless_too_few_remain():
    from clean_factory import frame, good_turn, refusal_turn, session

    rng = random.Random(5)

    def row(sid: str, n_good: int, n_fallback: int) -> dict:
        turns = [(*good_turn("en", rng), 0, "stop") for _ in range(n_good)]
        turns += [(*refusal_turn("en", rng), 1, "stop") for _ in range(n_fallback)]
        r = session(turns, session_id=sid, character_id=sid)
        r["pairings"] = [None] * n_good + ["fallback"] * n_fallback
        return r

    rows = [row("a", 3, 2), row("b", 1, 2)]
    df = frame(rows).with_columns(pl.Series("pairings", [r["pairings"] for r in rows], dtype=pl.List(pl.String)))
    result = clean_dialogues(df, CleanConfig(min_script_ratio=None, **NO_DEDUPE))
    kept = {r["session_id"]: r for r in result.clean.iter_rows(named=True)}
    assert kept["a"]["pairings"] == [None, None, None]  # 3 others remain: the fallbacks go
    assert kept["b"]["pairings"] == [None, "fallback", "fallback"]  # only 1 other: they stay
    q = result.quarantine
    assert q["reason"].to_list() == ["label_mismatch", "label_mismatch"] and set(q["session_id"]) == {"a"}
    assert q["detail"][0].startswith("fallback pairing")
    s = result.stats
    assert (s.turns_in, s.turns_clean, s.turns_quarantined) == (8, 6, 2)
    kept_all = clean_dialogues(df, CleanConfig(min_script_ratio=None, drop_fallback_turns=None, **NO_DEDUPE))
    assert kept_all.stats.turns_clean == 8
    no_column = clean_dialogues(df.drop("pairings"), CleanConfig(min_script_ratio=None, **NO_DEDUPE))
    assert no_column.stats.turns_clean == 8 and "pairings" not in no_column.clean.columns


def test_clean_rejects_unknown_pairings_values(tmp_path):
    from clean_factory import frame, good_session

    df = frame([good_session("en", random.Random(0), n=2, session_id="s")])
    df = df.with_columns(pl.Series("pairings", [["maybe", None]], dtype=pl.List(pl.String)))
    path = tmp_path / "d.parquet"
    df.write_parquet(path)
    code = main(["clean", "--in", str(path), "--out", str(tmp_path / "c.parquet"), "--quarantine", str(tmp_path / "q.parquet")])
    assert code == 2


# ---- trimming ---------------------------------------------------------------------------------------


CUT_WITH_SENTENCE = "I was born in the small state of Lu. Later I travelled between the states and"
CUT_WITHOUT_SENTENCE = "I was born in the small state of Lu and later I travelled between the"


def test_cut_answers_are_trimmed_or_dropped_and_never_trained_on(tmp_path):
    roles = sample_roles(4)
    roles = [r for r in roles if r.lang == "en"]

    def respond(body):
        if "response_format" in body:
            return None
        n = int(re.search(r"Question (\d)", body["messages"][-1]["content"]).group(1))
        return {0: (CUT_WITH_SENTENCE, "length"), 1: (CUT_WITHOUT_SENTENCE, "length")}.get(n, ("Yes. I remember it well.", "stop"))

    frame, report, _ = run_simulation(roles, tmp_path, respond, turns=4, questions_per_pair=3)
    finishes = Counter(frame["finish_reasons"].explode().to_list())
    assert finishes["length_trimmed"] == report.by_lang["en"].answers_trimmed > 0
    assert finishes["length"] == report.by_lang["en"].answers_cut > 0
    answers = [m["content"] for row in frame["messages"].to_list() for m in row if m["role"] == "assistant"]
    assert "I was born in the small state of Lu." in answers and CUT_WITH_SENTENCE not in answers

    dialogues = tmp_path / "dialogues.parquet"
    frame.write_parquet(dialogues)
    clean_cfg = tmp_path / "clean.toml"
    clean_cfg.write_text("min_script_ratio = false\nrefusal_window_chars = false\nidentity_break = false\n"
                         + "".join(f"{k} = false\n" for k in NO_DEDUPE))
    assert main(["clean", "--in", str(dialogues), "--out", str(tmp_path / "clean.parquet"), "--quarantine",
                 str(tmp_path / "q.parquet"), "--config", str(clean_cfg)]) == 0
    quarantine = pl.read_parquet(tmp_path / "q.parquet")
    assert "truncated" in quarantine["reason"].to_list()  # no complete sentence: dropped
    assert main(["tokenize", "--in", str(tmp_path / "clean.parquet"), "--tokenizer", "smollm2", "--seq-len", "1024",
                 "--out", str(tmp_path / "shards"), "--heldout-fraction", "0"]) == 0
    from ditto_jax.tokenizer import load_tokenizer

    tokenizer = load_tokenizer("smollm2").tokenizer
    shards = pl.concat([pl.read_parquet(f) for f in sorted((tmp_path / "shards" / "train").glob("*.parquet"))])
    trained = []
    for ids, mask in zip(shards["input_ids"].to_list(), shards["loss_mask"].to_list()):
        text = tokenizer.decode(ids, skip_special_tokens=False)
        trained += re.findall(r"<\|im_start\|>assistant\n(.*?)<\|im_end\|>", text, re.DOTALL)
        assert sum(mask) > 0
    assert trained and all(t.rstrip().endswith((".", "!", "?")) for t in trained), trained
    assert not any("travelled between the" in t for t in trained)
