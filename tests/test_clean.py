"""The clean stage: turn dropping keeps lists aligned, the turn policy,
conservation, config files, the CLI and bad input."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from collections import Counter

import polars as pl
import pytest
from ditto_native import DittoError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from clean_factory import frame, good_session, good_turn, refusal_turn, session
from data_tools.cleaning import CleanConfig, clean_dialogues, load_config
from data_tools.cleaning.schema import DIALOGUES_SCHEMA, QUARANTINE_COLUMNS
from data_tools.cli import main

BAD = {
    "truncated": ("What did you see?", "I saw the light split into many colours and then", 0, "length"),
    "too_short": ("What did you see?", "Light.", 0, "stop"),
    "assistant_leak": ("What did you see?", "As an AI language model, I cannot see anything at all.", 0, "stop"),
    "label_mismatch": ("What is a smartphone?", "It is my favourite instrument for studying the heavens.", 1, "stop"),
}


def _turn_keys(df: pl.DataFrame) -> Counter:
    """Multiset of (session_id, question, answer, per-turn entries) over all turns."""
    keys: Counter = Counter()
    for row in df.iter_rows(named=True):
        for i in range(len(row["messages"]) // 2):
            keys[(
                row["session_id"], row["messages"][2 * i]["content"], row["messages"][2 * i + 1]["content"],
                row["turn_types"][i], row["rejection_labels"][i], row["question_sources"][i],
                tuple(row["evidence"][i]), row["finish_reasons"][i],
            )] += 1
    return keys


def test_dropped_turn_leaves_every_per_turn_list_aligned():
    rng = random.Random(0)
    turns = [(*good_turn("en", rng), 0, "stop") for _ in range(2)]
    turns.insert(1, BAD["truncated"])
    turns.append((*refusal_turn("en", rng), 1, "stop"))
    src = session(turns, session_id="s")
    r = clean_dialogues(frame([src]))
    kept = r.clean.row(0, named=True)
    keep = [0, 2, 3]
    assert kept["messages"] == [m for i in keep for m in src["messages"][2 * i : 2 * i + 2]]
    for col in ("turn_types", "rejection_labels", "question_sources", "evidence", "finish_reasons"):
        assert kept[col] == [src[col][i] for i in keep], col
    q = r.quarantine.row(0, named=True)
    assert (q["level"], q["turn_index"], q["reason"]) == ("turn", 1, "truncated")
    assert q["messages"] == src["messages"][2:4]
    assert q["evidence"] == [src["evidence"][1]] and q["question_sources"] == [src["question_sources"][1]]
    assert q["detail"] == "finish_reason is length"
    assert r.clean.schema == pl.Schema(DIALOGUES_SCHEMA)
    assert r.quarantine.schema == pl.Schema({**DIALOGUES_SCHEMA, **QUARANTINE_COLUMNS})


def test_too_few_turns_left_quarantines_the_whole_session():
    rng = random.Random(1)
    src = session([(*good_turn("en", rng), 0, "stop"), BAD["too_short"], BAD["truncated"]], session_id="s")
    r = clean_dialogues(frame([src]))
    assert r.clean.height == 0
    q = r.quarantine.row(0, named=True)
    assert (q["level"], q["turn_index"], q["reason"]) == ("session", None, "too_short")
    assert q["messages"] == src["messages"]  # the whole session, failed turns included
    assert q["detail"].startswith("1 of 3 turns left < min_turns 2; turn 1 too_short")
    assert "turn 2 truncated" in q["detail"]
    # With min_turns 1 the good turn survives alone.
    r = clean_dialogues(frame([src]), CleanConfig(min_turns=1))
    assert r.clean["messages"].list.len().to_list() == [2]
    assert r.quarantine["turn_index"].to_list() == [1, 2]


def test_drop_session_policy_and_empty_sessions():
    rng = random.Random(2)
    src = good_session("en", rng, session_id="s")
    src["finish_reasons"] = ["stop", "stop", "stop", "length", "stop"]
    empty = session([], session_id="e", character_id="Q9")
    r = clean_dialogues(frame([src, empty]), CleanConfig(turn_failure="drop_session"))
    assert list(zip(r.quarantine["session_id"], r.quarantine["level"], r.quarantine["reason"])) == [
        ("s", "session", "truncated"),
        ("e", "session", "empty_turn"),
    ]
    assert r.quarantine["detail"].to_list()[1] == "session has no turns"
    assert r.stats.to_dict()["sessions"] == {"in": 2, "clean": 0, "quarantined": 2}


def test_same_output_for_one_and_many_threads():
    rng = random.Random(3)
    rows = [good_session(lang, rng, character_id=f"Q{i}", seed=i) for i in range(40) for lang in ("en", "zh")]
    for i in range(0, len(rows), 5):
        rows[i] = dict(rows[i - 1], session_id=f"dup{i}") if i else rows[i]
    df = frame(rows)
    one = clean_dialogues(df, CleanConfig(threads=1))
    many = clean_dialogues(df, CleanConfig(threads=4))
    assert one.clean.equals(many.clean) and one.quarantine.equals(many.quarantine)
    assert one.quarantine.height > 0


# A turn is one of these kinds, good or bad.
_KINDS = ["good", "refusal", *BAD]


def _make(kinds_per_session: list[list[str]], dup_of: list[int | None]) -> pl.DataFrame:
    rng = random.Random(0)
    rows = []
    for s, kinds in enumerate(kinds_per_session):
        turns = []
        for k in kinds:
            if k == "good":
                turns.append((*good_turn("en", rng), 0, "stop"))
            elif k == "refusal":
                turns.append((*refusal_turn("en", rng), 1, "stop"))
            else:
                turns.append(BAD[k])
        rows.append(session(turns, session_id=f"s{s}", character_id=f"Q{s}"))
    for s, d in enumerate(dup_of[: len(rows)]):
        if d is not None and d < len(rows):
            rows[s] = dict(rows[d], session_id=f"s{s}", character_id=f"Q{s}")
    return frame(rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kinds=st.lists(st.lists(st.sampled_from(_KINDS), min_size=0, max_size=6), min_size=1, max_size=8),
    dup_of=st.lists(st.none() | st.integers(0, 7), max_size=8),
    policy=st.sampled_from(["drop_turn", "drop_session"]),
    min_turns=st.integers(1, 3),
)
def test_conservation_property(kinds, dup_of, policy, min_turns):
    df = _make(kinds, dup_of)
    r = clean_dialogues(df, CleanConfig(turn_failure=policy, min_turns=min_turns))
    st_ = r.stats.to_dict()
    assert st_["sessions"]["in"] == r.clean.height + int((r.quarantine["level"] == "session").sum())
    # Every input turn is in exactly one place, with its per-turn entries.
    assert _turn_keys(df) == _turn_keys(r.clean) + _turn_keys(r.quarantine)
    assert set(r.quarantine["reason"]) <= set(BAD) | {"exact_duplicate", "near_duplicate", "empty_turn"}
    # Failed turns never reach the clean table.
    assert not any(a == BAD["too_short"][1] for m in r.clean["messages"].to_list() for a in (x["content"] for x in m))


def test_stats_add_up():
    a = clean_dialogues(_make([["good", "good", "truncated"]], [])).stats
    b = clean_dialogues(_make([["too_short", "good"], ["good", "good"]], [])).stats
    total = a + b
    assert (total.sessions_in, total.turns_in, total.turns_clean) == (3, 7, 4)
    assert total.turns_by_reason == Counter({"truncated": 1, "too_short": 2})
    total.check_conservation()


# ------------------------------------------------------------------ config


def test_config_files(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('[clean]\nmin_answer_chars = false\nmin_turns = 3\ntop_ngram_char_frac = [0.3, 0.2]\n')
    cfg = load_config(toml)
    assert (cfg.min_answer_chars, cfg.min_turns, cfg.top_ngram_char_frac) == (None, 3, (0.3, 0.2))
    js = tmp_path / "c.json"
    js.write_text(json.dumps({"session_near_dup_threshold": None, "leak_phrases": ["verily"]}))
    cfg = load_config(js)
    assert cfg.session_near_dup_threshold is None and cfg.leak_phrases == ("verily",)
    js.write_text(json.dumps({"min_answer_char": 3}))
    with pytest.raises(DittoError, match="unknown clean setting 'min_answer_char'"):
        load_config(js)
    js.write_text(json.dumps({"min_turns": "two"}))
    with pytest.raises(DittoError, match="setting 'min_turns' has the wrong type"):
        load_config(js)
    with pytest.raises(DittoError, match="turn_failure"):
        CleanConfig(turn_failure="drop_everything")


# --------------------------------------------------------------------- CLI


def test_cli_writes_outputs_and_report(tmp_path, capsys):
    rng = random.Random(4)
    rows = [good_session("en", rng, session_id=f"s{i}", character_id=f"Q{i}") for i in range(3)]
    rows[1]["finish_reasons"] = ["length"] * 5
    inp, out, qua = tmp_path / "d.parquet", tmp_path / "clean.parquet", tmp_path / "q.parquet"
    frame(rows).write_parquet(inp)
    assert main(["clean", "--in", str(inp), "--out", str(out), "--quarantine", str(qua)]) == 0
    assert pl.read_parquet(out)["session_id"].to_list() == ["s0", "s2"]
    q = pl.read_parquet(qua)
    assert q.select("session_id", "level", "reason").rows() == [("s1", "session", "truncated")]
    report = json.loads((tmp_path / "clean.report.json").read_text())
    assert report["sessions"] == {"in": 3, "clean": 2, "quarantined": 1}
    assert report["turns"] == {"in": 15, "clean": 10, "quarantined": 5}
    assert report["reasons"] == {"truncated": {"session_rows": 1, "turn_rows": 0, "turns": 5}}
    assert report["examples"]["truncated"][0]["session_id"] == "s1"
    printed = capsys.readouterr().out
    assert "3 in, 2 clean, 1 quarantined whole" in printed and "truncated" in printed


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "data_tools.cli", "clean", *args], capture_output=True, text=True)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda df: df.drop("lang"), "missing column 'lang'"),
        (lambda df: df.with_columns(pl.lit(3).alias("system")), "column 'system' has type Int32, expected String"),
        (lambda df: df.with_columns(pl.col("rejection_labels").cast(pl.List(pl.String))), "column 'rejection_labels' has type"),
        (lambda df: df.with_columns(pl.col("finish_reasons").list.head(1)), "row 0 (session_id 's'): column 'finish_reasons' needs one entry per turn"),
        (lambda df: df.with_columns(pl.col("rejection_labels").cast(pl.List(pl.Int64)).list.eval(pl.element() + 300)), "column 'rejection_labels' does not fit"),
    ],
)
def test_bad_input_is_one_line_naming_file_and_column(tmp_path, mutate, message):
    inp = tmp_path / "bad.parquet"
    mutate(frame([good_session("en", random.Random(0), session_id="s")])).write_parquet(inp)
    p = _run_cli("--in", str(inp), "--out", str(tmp_path / "o.parquet"), "--quarantine", str(tmp_path / "q.parquet"))
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith(f"ditto-data clean: error: {inp}: ") and message in lines[-1], p.stderr
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "o.parquet").exists()


def test_not_a_parquet_file(tmp_path):
    inp = tmp_path / "x.parquet"
    inp.write_text("hello")
    p = _run_cli("--in", str(inp), "--out", str(tmp_path / "o.parquet"), "--quarantine", str(tmp_path / "q.parquet"))
    assert p.returncode == 2 and "not a readable parquet file" in p.stderr and "Traceback" not in p.stderr
