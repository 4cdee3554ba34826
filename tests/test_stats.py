"""`ditto-data stats` on each stage's output."""
from __future__ import annotations

import json

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dialogue_fixtures import SHARED_TOKENIZERS, make_sessions, sessions_table, write_sessions

from data_tools.cli import main
from data_tools.stats import summarize


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("stats")
    sessions = make_sessions(30, seed=21)
    write_sessions(d / "clean.parquet", sessions)
    quarantine = sessions_table(sessions[:4]).append_column("reason", pa.array(["too_short", "too_short", "repetition", "near_duplicate"]))
    quarantine = quarantine.append_column("level", pa.array(["session", "turn", "turn", "session"]))
    pq.write_table(quarantine, d / "quarantine.parquet")
    pq.write_table(
        pa.table({
            "character_id": ["Q1", "Q2", "Q2"],
            "lang": ["en", "en", "zh"],
            "category": ["human", "fictional", "fictional"],
            "label": ["A", "B", "B"],
            "sitelinks": [10, 30, 20],
            "profile": ["abc", "de", ""],
        }),
        d / "characters.parquet",
    )
    assert main(["tokenize", "--in", str(d / "clean.parquet"), "--tokenizer", str(SHARED_TOKENIZERS / "qwen2.5-instruct"),
                 "--seq-len", "1024", "--out", str(d / "shards"), "--heldout-fraction", "0.2"]) == 0
    return d, sessions


def test_dialogues(outputs):
    d, sessions = outputs
    s = summarize(d / "clean.parquet")
    turns = [len(x["messages"]) // 2 for x in sessions]
    assert s["kind"] == "dialogues" and s["rows"] == 30
    assert s["turns"]["total"] == sum(turns) and s["turns"]["max"] == max(turns) and s["turns"]["min"] == min(turns)
    assert s["languages"] == {"en": sum(x["lang"] == "en" for x in sessions), "zh": sum(x["lang"] == "zh" for x in sessions)}
    assert sum(s["turn_types"].values()) == sum(turns)


def test_quarantine_reasons(outputs):
    d, _ = outputs
    s = summarize(d / "quarantine.parquet")
    assert s["kind"] == "quarantine"
    assert s["drop_reasons"] == {"too_short": 2, "repetition": 1, "near_duplicate": 1}
    assert s["levels"] == {"session": 2, "turn": 2}


def test_characters(outputs):
    d, _ = outputs
    s = summarize(d / "characters.parquet")
    assert s["kind"] == "characters" and s["rows"] == 3
    assert s["categories"] == {"fictional": 2, "human": 1}
    assert s["sitelinks"]["max"] == 30 and s["sitelinks"]["min"] == 10


def test_shards_match_manifest(outputs):
    d, _ = outputs
    s = summarize(d / "shards")
    manifest = json.loads((d / "shards" / "manifest.json").read_text())
    assert s["kind"] == "shards" and s["seq_len"] == 1024
    for split in ("train", "heldout"):
        m, got = manifest["splits"][split], s[split]
        for key in ("num_segments", "real_tokens", "padded_tokens", "loss_tokens"):
            assert got[key] == m[key], (split, key)
        assert got["rows"] == m["num_rows"]
        assert got["packing_efficiency"] == pytest.approx(m["packing_efficiency"], abs=1e-4)
    one = summarize(next((d / "shards" / "train").glob("*.parquet")))
    assert one["kind"] == "shard" and one["real_tokens"] == manifest["splits"]["train"]["real_tokens"]
    # A plain list column (not fixed-size) is read the same way.
    listed = pl.read_parquet(next((d / "shards" / "train").glob("*.parquet"))).with_columns(pl.all().arr.to_list())
    listed.write_parquet(d / "listed.parquet")
    assert summarize(d / "listed.parquet")["real_tokens"] == one["real_tokens"]
    (d / "listed.parquet").unlink()


def test_folder_and_cli(outputs, capsys):
    d, _ = outputs
    s = summarize(d)
    assert s["kind"] == "folder" and set(s["contents"]) == {"characters.parquet", "clean.parquet", "quarantine.parquet", "shards"}
    assert main(["stats", str(d / "shards")]) == 0
    text = capsys.readouterr().out
    assert "packing_efficiency" in text and "train:" in text
    assert main(["stats", str(d / "clean.parquet"), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 30


def test_unknown_inputs_are_one_line_errors(tmp_path, capsys):
    pq.write_table(pa.table({"x": [1]}), tmp_path / "x.parquet")
    assert main(["stats", str(tmp_path / "x.parquet")]) == 2
    err = capsys.readouterr().err
    assert "unrecognised columns" in err and err.count("\n") == 1
    assert main(["stats", str(tmp_path / "missing")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "x.parquet").unlink()
    assert main(["stats", str(tmp_path)]) == 2
    assert "no stage outputs" in capsys.readouterr().err
