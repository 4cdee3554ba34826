"""Dialogue simulation end to end with SmolLM2: in process, over HTTP through faults, killed and resumed.

Generations are short (1 question per pair, 2 turns, small token limits) to
keep the suite fast on two CPU cores; the contract checks do not depend on
how good the text is.
"""
from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys

import polars as pl
import pytest

from data_tools.llm.cache import CallCache
from data_tools.llm.jax_backend import JaxBackend
from data_tools.llm.runner import KILL_AFTER_CALLS_ENV, CallRunner
from data_tools.simulation.evidence import Material
from data_tools.simulation.pipeline import SimulationConfig, simulate
from data_tools.simulation.prompts import PromptTemplates
from data_tools.simulation.roles import roles_from_table
from data_tools.simulation.schema import DIALOGUE_SCHEMA
from data_tools.simulation.seeding import session_id
from fault_proxy import GARBLED_CONTENT, FaultProxy
from simulate_characters import characters_frame, write_characters

SEED = 7
TURNS = 2
SMALL = dict(turns=TURNS, questions_per_pair=1, seed=SEED, max_query_tokens=160, max_answer_tokens=32)
CLI_SMALL = ["--turns", str(TURNS), "--questions-per-pair", "1", "--seed", str(SEED), "--max-query-tokens", "160",
             "--max-answer-tokens", "32", "--no-progress"]


def check_contract(frame: pl.DataFrame, table: pl.DataFrame, *, turns: int, seed: int, simulator: str) -> None:
    """Every column of every session as the dialogues contract says."""
    assert frame.schema == DIALOGUE_SCHEMA
    roles = {(r.character_id, r.lang): r for r in roles_from_table(table, source="characters")}
    assert frame["session_id"].n_unique() == frame.height
    for row in frame.iter_rows(named=True):
        role = roles[(row["character_id"], row["lang"])]
        assert row["session_id"] == session_id(role.character_id, role.lang, seed)
        assert row["system"] == role.system_message()
        messages = row["messages"]
        assert [m["role"] for m in messages] == ["user", "assistant"] * turns
        assert all(m["content"].strip() for m in messages[::2])  # questions are never empty
        for column in ("turn_types", "rejection_labels", "question_sources", "evidence", "finish_reasons", "pairings"):
            assert len(row[column]) == turns, column
        assert abs(row["turn_types"].count("role_specific") - row["turn_types"].count("contrastive")) <= turns % 2 + 1
        material = Material(role.profile, role.facts)
        for kind, label, source, evidence, how in zip(
            row["turn_types"], row["rejection_labels"], row["question_sources"], row["evidence"], row["pairings"]
        ):
            assert kind in ("role_specific", "contrastive")
            if kind == "role_specific":
                assert (label, source, how) == (0, role.character_id, None)
                assert all(material.verifies(e) for e in evidence)  # only verified evidence is kept
            else:
                assert label == 1 and source != role.character_id and source in {cid for cid, _ in roles}
                assert evidence == [] and how in ("paired", "fallback")
        assert set(row["finish_reasons"]) <= {"stop", "length", "length_trimmed"}
        assert (row["simulator"], row["seed"]) == (simulator, seed)


def run_cli(args: list[str], env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "data_tools.cli", "simulate", *args], capture_output=True, text=True, env=env, timeout=900)


def summary_number(stderr: str, label: str) -> int:
    found = re.search(rf"{label} (\d+)", stderr)
    assert found, f"no '{label}' in: {stderr}"
    return int(found.group(1))


# ---- in process ----------------------------------------------------------------------------------


def test_in_process_simulation(smollm2_engine, tmp_path):
    table = characters_frame()
    roles = roles_from_table(table, source="characters")
    backend = JaxBackend(smollm2_engine, "smollm2", max_batch=8)
    config = SimulationConfig(**SMALL)
    with CallCache(tmp_path / "calls.sqlite") as cache:
        runner = CallRunner(backend, cache)
        frame, report = simulate(roles, runner, PromptTemplates(), config)
        assert report.sessions == 6 and report.turns == 12 and not report.dropped
        assert frame["character_id"].to_list() == table["character_id"].to_list()
        check_contract(frame, table, turns=TURNS, seed=SEED, simulator="smollm2")
        made = runner.stats.calls
        assert made == len(cache) >= 6 + 12  # one query per role (plus any re-asks) and one answer per turn

        # The same run again is served entirely from the cache, and gives the same sessions.
        again = CallRunner(backend, cache)
        frame2, _ = simulate(roles, again, PromptTemplates(), config)
        assert (again.stats.calls, again.stats.cache_hits) == (0, made)
        assert frame2.equals(frame)


# ---- over HTTP, through faults -------------------------------------------------------------------


@pytest.fixture(scope="module")
def characters_file(tmp_path_factory):
    return write_characters(tmp_path_factory.mktemp("chars") / "characters.parquet")


@pytest.fixture(scope="module")
def http_run(smollm2_server, characters_file, tmp_path_factory):
    """An uninterrupted CLI run against `ditto-jax serve`, through a proxy injecting one of each fault."""
    out = tmp_path_factory.mktemp("http") / "dialogues.parquet"
    faults = ["500", "429:1", "drop", "slow:1", "badjson"]
    with FaultProxy(smollm2_server.url, faults) as proxy:
        proc = run_cli(["--characters", str(characters_file), "--out", str(out), "--endpoint", proxy.url,
                        "--model-name", smollm2_server.name, "--concurrency", "4", "--retry-base-delay", "0.05", *CLI_SMALL])
        used = proxy.faults_used()
    return proc, out, used


def test_http_run_survives_faults(http_run, characters_file):
    proc, out, used = http_run
    assert proc.returncode == 0, proc.stderr
    assert used[:5] == ["500", "429:1", "drop", "slow:1", "badjson"]  # every fault was served
    frame = pl.read_parquet(out)
    assert frame.height == 6
    check_contract(frame, pl.read_parquet(characters_file), turns=TURNS, seed=SEED, simulator="smollm2")
    # One retry per injected failure; the slow reply needed none.
    assert re.search(r"retries 4 \(429 1, 5xx 1, bad_body 1, connection 1\)", proc.stderr), proc.stderr
    assert summary_number(proc.stderr, "failed calls") == 0
    assert summary_number(proc.stderr, "cache hits") == 0
    assert f"wrote 6 sessions ({6 * TURNS} turns)" in proc.stderr


def _call_ident(messages, seed) -> tuple:
    return (seed, json.dumps([[m[0], m[1]] if isinstance(m, list) else [m["role"], m["content"]] for m in messages]))


def test_kill_and_resume(smollm2_server, characters_file, http_run, tmp_path):
    """SIGKILL after 5 stored calls, then resume: same sessions as the uninterrupted run, no stored call made again."""
    out, cache = tmp_path / "dialogues.parquet", tmp_path / "calls.sqlite"
    args = ["--characters", str(characters_file), "--out", str(out), "--cache", str(cache), "--endpoint", "PROXY",
            "--model-name", smollm2_server.name, "--concurrency", "3", *CLI_SMALL]

    with FaultProxy(smollm2_server.url) as proxy:
        killed = run_cli([proxy.url if a == "PROXY" else a for a in args], {KILL_AFTER_CALLS_ENV: "5"})
    assert killed.returncode == -9, killed.stderr
    assert not out.exists()  # nothing half-written
    db = sqlite3.connect(cache)
    stored_before = {_call_ident(r["messages"], r["seed"]) for r in (json.loads(t) for (t,) in db.execute("SELECT request FROM calls"))}
    db.close()
    assert len(stored_before) == 5

    with FaultProxy(smollm2_server.url) as proxy:
        resumed = run_cli([proxy.url if a == "PROXY" else a for a in args])
        sent_after = [_call_ident(s.body["messages"], s.body.get("seed")) for s in proxy.seen]
    assert resumed.returncode == 0, resumed.stderr
    assert not stored_before & set(sent_after)  # no stored call is made again
    assert len(sent_after) == len(set(sent_after))  # and none twice within the resumed run
    assert summary_number(resumed.stderr, "cache hits") == 5
    with CallCache(cache) as c:
        assert len(c) == 5 + summary_number(resumed.stderr, "calls")

    frame = pl.read_parquet(out)
    uninterrupted = pl.read_parquet(http_run[1])
    assert frame["session_id"].to_list() == uninterrupted["session_id"].to_list()
    check_contract(frame, pl.read_parquet(characters_file), turns=TURNS, seed=SEED, simulator="smollm2")


def test_unparsable_questions_are_retried_then_counted(smollm2_server, characters_file, tmp_path):
    """Every query reply for Confucius comes back as prose: 3 tries, then a counted failure; the rest completes."""

    def confucius_query(body) -> bool:
        return "response_format" in body and "Material about Confucius" in body["messages"][-1]["content"]

    out = tmp_path / "dialogues.parquet"
    with FaultProxy(smollm2_server.url, garble=confucius_query) as proxy:
        proc = run_cli(["--characters", str(characters_file), "--out", str(out), "--limit", "3", "--endpoint", proxy.url,
                        "--model-name", smollm2_server.name, "--concurrency", "4", *CLI_SMALL])
        garbled = [s for s in proxy.seen if confucius_query(s.body)]
    assert proc.returncode == 0, proc.stderr
    assert len(garbled) == 3  # the first try and 2 re-asks, each a new sample
    assert len({s.body["seed"] for s in garbled}) == 3
    assert "query re-asks 2" in proc.stderr
    assert "query unparsable_json 1" in proc.stderr and "session no_questions 1" in proc.stderr
    frame = pl.read_parquet(out)
    assert frame.height == 2 and "Q4604" not in frame["character_id"].to_list()
    table = pl.read_parquet(characters_file)
    check_contract(frame, table, turns=TURNS, seed=SEED, simulator="smollm2")
    assert GARBLED_CONTENT not in str(frame["messages"].to_list())
