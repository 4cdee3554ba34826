"""`ditto-eval` against a real `ditto-jax serve`, SmolLM2 as both model and judge.

One server for the whole test session (conftest's `smollm2_server`); short
generations and one judge sample keep it affordable on two CPU cores. The
checks are about completeness, schema and resumption, not about how good a
135M model's role-play is.
"""
from __future__ import annotations

import json
import sqlite3

import jsonschema
import polars as pl
import pytest

from data_tools.characters.sample import load_sample
from data_tools.eval.records import load_sessions
from data_tools.llm.cache import CallCache
from data_tools.llm.runner import KILL_AFTER_CALLS_ENV
from eval_fixtures import run_eval_cli, write_jsonl
from fault_proxy import FaultProxy

# A loaded 2-core machine needs far longer than an idle one: each module test gets its own, generous limit.
pytestmark = pytest.mark.timeout(2400)

SMALL = ["--judge-samples", "1", "--max-answer-tokens", "16", "--judge-max-tokens", "24", "--concurrency", "4",
         "--judge-concurrency", "8", "--no-progress"]
KILL_AFTER = 12  # stored judge calls before the process kills itself (the 8 answers come first)

SESSIONS = [
    ("Confucius", "Chinese philosopher of the Spring and Autumn period", "en", ["What did you teach your students?", "What is a smartphone?"], [0, 1],
     ["[Ada Lovelace] English mathematician", "[Confucius] Chinese philosopher of the Spring and Autumn period", "[Napoleon] French emperor", "[Cleopatra] Egyptian queen"]),
    ("Ada Lovelace", "English mathematician", "en", ["Who was Charles Babbage to you?", "How did you fight at Waterloo?"], [0, 1],
     ["Napoleon", "Ada Lovelace", "Confucius", "Cleopatra"]),
    ("孙悟空", "《西游记》中的美猴王", "zh", ["你的金箍棒有多重？", "你会用电脑编程吗？"], [0, 1],
     ["[李白] 唐代诗人", "[孙悟空] 《西游记》中的美猴王", "[林黛玉] 《红楼梦》中的人物", "[诸葛亮] 三国时期蜀汉丞相"]),
    ("李白", "唐代诗人", "zh", ["你最喜欢在哪里饮酒作诗？", "你知道相对论吗？"], [0, 1],
     ["[孙悟空] 《西游记》中的美猴王", "[杜甫] 唐代诗人，李白的朋友", "[李白] 唐代诗人", "[诸葛亮] 三国时期蜀汉丞相"]),
]

NUMBER_OR_NULL = {"type": ["number", "null"]}
RESULT_SCHEMA = {
    "type": "object",
    "required": ["system", "prompts", "role_consist_cands", "rejection_labels", "evidence", "meta", "messages", "finish_reasons",
                 "consist_scores", "knowledge_scores", "reject_scores", "judge_unparsed", "leak_flags", "identity_break_flags",
                 "refusal_flags", "model", "judge", "judge_samples", "system_policy"],
    "properties": {
        "messages": {"type": "array", "minItems": 5, "maxItems": 5, "items": {
            "type": "object", "required": ["role", "content"], "additionalProperties": False,
            "properties": {"role": {"enum": ["system", "user", "assistant"]}, "content": {"type": "string"}}}},
        "finish_reasons": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"enum": ["stop", "length"]}},
        "consist_scores": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "number", "minimum": 0, "maximum": 1}},
        "knowledge_scores": {"type": "array", "minItems": 2, "maxItems": 2, "items": {**NUMBER_OR_NULL, "minimum": 1, "maximum": 10}},
        "reject_scores": {"type": "array", "minItems": 2, "maxItems": 2, "items": {"enum": [0, 1, None]}},
        "judge_unparsed": {"type": "object", "required": ["consistency", "knowledge", "rejection"], "additionalProperties": {
            "type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "integer", "minimum": 0, "maximum": 1}}},
        **{f: {"type": "array", "minItems": 2, "maxItems": 2, "items": {"type": "boolean"}} for f in ("leak_flags", "identity_break_flags", "refusal_flags")},
        "model": {"const": "smollm2"},
        "judge": {"const": "smollm2"},
        "judge_samples": {"const": 1},
        "system_policy": {"const": "native"},
    },
}


@pytest.fixture(scope="module")
def eval_file(tmp_path_factory):
    records = []
    for label, description, lang, prompts, labels, cands in SESSIONS:
        records.append({
            "system": f"You are {label}, {description}" if lang == "en" else f"你是{label}，{description}",
            "prompts": prompts, "role_consist_cands": cands, "rejection_labels": labels,
            "evidence": [[f"{label}: {description}"], []],
            "meta": {"label": label, "description": description, "lang": lang, "summary": description},
        })
    return write_jsonl(tmp_path_factory.mktemp("eval") / "eval.jsonl", records)


def _ident(body) -> str:
    return json.dumps([body["messages"], body.get("seed")], ensure_ascii=False)


@pytest.fixture(scope="module")
def killed_and_resumed(smollm2_server, eval_file, tmp_path_factory):
    """A run that kills itself (SIGKILL) after 12 stored judge calls, then the same command again, both through a recording proxy."""
    folder = tmp_path_factory.mktemp("run")
    out, cache = folder / "results.jsonl", folder / "calls.sqlite"

    def args(url, target=out):
        return ["run", "--eval", eval_file, "--endpoint", url, "--model-name", smollm2_server.name, "--judge-endpoint", url,
                "--judge-model-name", smollm2_server.name, "--out", target, "--cache", cache, *SMALL]

    with FaultProxy(smollm2_server.url) as proxy:
        killed = run_eval_cli(args(proxy.url), {KILL_AFTER_CALLS_ENV: str(KILL_AFTER)})
    db = sqlite3.connect(cache)
    stored = [json.loads(t) for (t,) in db.execute("SELECT request FROM calls")]
    db.close()
    with FaultProxy(smollm2_server.url) as proxy:
        resumed = run_eval_cli(args(proxy.url))
        sent = [s.body for s in proxy.seen]
    return killed, stored, resumed, sent, out, cache, lambda target: args(smollm2_server.url, target)


def test_kill_during_run_then_rerun_makes_no_call_twice(killed_and_resumed):
    killed, stored, resumed, sent, out, cache, _ = killed_and_resumed
    assert killed.returncode == -9, killed.stderr
    judge_stored = [r for r in stored if r["json_schema"] is not None]
    assert len(stored) == 8 + KILL_AFTER and len(judge_stored) == KILL_AFTER  # killed mid-judging
    assert resumed.returncode == 0, resumed.stderr
    before = {_ident({"messages": [{"role": m[0], "content": m[1]} for m in r["messages"]], "seed": r["seed"]}) for r in stored}
    after = [_ident(b) for b in sent]
    assert not before & set(after)  # nothing stored is asked again
    assert len(after) == len(set(after))  # and nothing twice in the rerun
    assert all("response_format" in b for b in sent)  # the rerun made judge calls only: the answers came from the cache
    with CallCache(cache) as c:
        assert len(c) == len(stored) + len(sent)
    assert f"cache hits {len(stored)}" in resumed.stderr


def test_results_are_complete_and_schema_valid(killed_and_resumed, eval_file):
    *_, out, cache, args_to = killed_and_resumed
    inputs = [json.loads(line) for line in eval_file.read_text().splitlines()]
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(results) == 4
    for given, got in zip(inputs, results):  # input order, input fields kept
        jsonschema.validate(got, RESULT_SCHEMA)
        assert {k: got[k] for k in given} == given
        assert got["messages"][0] == {"role": "system", "content": given["system"]}
        assert [m["content"] for m in got["messages"][1::2]] == given["prompts"]
        assert [m["role"] for m in got["messages"]] == ["system", "user", "assistant", "user", "assistant"]
    load_sessions(out)  # a results file is still a valid evaluation file
    # A third run is served wholly from the cache and writes the same results.
    again = out.with_name("again.jsonl")
    proc = run_eval_cli(args_to(again))
    assert proc.returncode == 0, proc.stderr
    assert "answer calls 0, judge calls 0" in proc.stderr
    assert again.read_text() == out.read_text()


def test_report_on_the_results(killed_and_resumed, tmp_path):
    *_, out, _, _ = killed_and_resumed
    proc = run_eval_cli(["report", out, "--out", tmp_path / "report.md", "--resamples", "50"], timeout=300)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((tmp_path / "report.json").read_text())
    splits = data["wikiroleeval"]["splits"]
    assert list(splits) == ["All", "en", "zh"]
    assert splits["All"]["counts"][0]["turns"] == 8 and splits["en"]["counts"][0]["sessions"] == 2
    assert data["wikiroleeval"]["models"][0]["name"] == "smollm2"
    assert (tmp_path / "report.png").stat().st_size > 5000


def test_mtbench_roleplay(smollm2_server, shared_dir, tmp_path):
    questions = shared_dir / "external" / "mt_bench_roleplay_question.jsonl"
    out = tmp_path / "mtbench.jsonl"
    proc = run_eval_cli(["mtbench", "--questions", questions, "--limit", "2", "--endpoint", smollm2_server.url, "--model-name",
                         smollm2_server.name, "--judge-endpoint", smollm2_server.url, "--judge-model-name", smollm2_server.name,
                         "--out", out, "--max-answer-tokens", "24", "--judge-max-tokens", "16", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    source = [json.loads(line) for line in questions.read_text().splitlines()][:2]
    assert [r["question_id"] for r in records] == [q["question_id"] for q in source]
    for r, q in zip(records, source):
        assert r["turns"] == q["turns"] and len(r["answers"]) == 2 and all(isinstance(a, str) for a in r["answers"])
        assert len(r["turn_scores"]) == 2
        scored = [s for s in r["turn_scores"] if s is not None]
        assert all(1 <= s <= 10 for s in scored)
        assert r["score"] == (sum(scored) / len(scored) if scored else None)
        assert (r["model"], r["judge"], r["category"]) == ("smollm2", "smollm2", "roleplay")
    assert "mean score" in proc.stderr


def test_build_over_http(smollm2_server, tmp_path):
    ids = ["Q4604", "Q1048", "Q7259", "Q937", "Q692", "sample:sun-wukong", "Q635", "Q913"]
    chars = tmp_path / "characters.parquet"
    load_sample(["en", "zh"]).filter(pl.col("character_id").is_in(ids)).write_parquet(chars)
    train = tmp_path / "dialogues.parquet"
    pl.DataFrame({"character_id": ["Q692", "Q913"]}).write_parquet(train)
    out = tmp_path / "eval.jsonl"
    proc = run_eval_cli(["build", "--characters", chars, "--exclude-from", train, "--endpoint", smollm2_server.url,
                         "--model-name", smollm2_server.name, "--out", out, "--n", "4", "--turns", "2", "--questions-per-pair", "1",
                         "--max-query-tokens", "96", "--no-progress"])
    assert proc.returncode == 0, proc.stderr
    sessions = load_sessions(out)
    assert 1 <= len(sessions) <= 4
    for s in sessions:
        meta = s.record["meta"]
        assert meta["character_id"] not in ("Q692", "Q913")
        assert s.rejection_labels == tuple(int(t == "contrastive") for t in meta["turn_types"])
        assert len(s.candidates) == 4 and s.true_candidate.name == s.label
    assert "4 character rows excluded as trained on" in proc.stderr
