"""`ditto-data tokenize`: the shard contract, manifest counts, split,
determinism, over-long policy and one-line errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from dialogue_fixtures import SHARED_TOKENIZERS, make_sessions, write_sessions

from data_tools.cli import main

QWEN = str(SHARED_TOKENIZERS / "qwen2.5-instruct")
MISTRAL = str(SHARED_TOKENIZERS / "mistral-instruct")
SHARD_COLUMNS = ["input_ids", "loss_mask", "segment_ids", "positions"]


def run_tokenize(inp, out, *extra, tokenizer=QWEN, seq_len=512) -> int:
    return main(["tokenize", "--in", str(inp), "--tokenizer", tokenizer, "--seq-len", str(seq_len), "--out", str(out), *extra])


def read_split(folder) -> dict[str, np.ndarray]:
    tables = [pq.read_table(f) for f in sorted(folder.glob("*.parquet"))]
    assert tables, folder
    out = {}
    for col in SHARD_COLUMNS:
        chunks = [t.column(col).combine_chunks() for t in tables]
        size = chunks[0].type.list_size
        out[col] = np.concatenate([c.flatten().to_numpy() for c in chunks]).reshape(-1, size)
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("tok")
    sessions = make_sessions(120, seed=11)
    return d, sessions, write_sessions(d / "clean.parquet", sessions)


def test_writes_the_shard_contract_and_manifest_counts_match(corpus, tmp_path):
    _, sessions, inp = corpus
    out = tmp_path / "shards"
    assert run_tokenize(inp, out, "--heldout-fraction", "0.1", "--template-var", "date_string=26 Jul 2024", seq_len=4096) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["dropped"] == {} and manifest["truncated"] == 0
    for key in ("seq_len", "tokenizer", "chat_template_sha256", "template_vars", "system_policy", "splits", "dropped", "sources"):
        assert key in manifest
    assert manifest["seq_len"] == 4096
    assert manifest["template_vars"] == {"date_string": "26 Jul 2024"}
    assert manifest["system_policy"] == "native"
    assert manifest["sources"] == {str(inp): hashlib.sha256(inp.read_bytes()).hexdigest()}
    assert set(manifest["tokenizer"]) == {"name", "sha256"}

    kept = 0
    for split in ("train", "heldout"):
        schema = pq.read_schema(next((out / split).glob("*.parquet")))
        assert schema.names == SHARD_COLUMNS
        assert [str(schema.field(c).type.value_type) for c in SHARD_COLUMNS] == ["int32", "uint8", "int32", "int32"]
        assert all(schema.field(c).type.list_size == 4096 for c in SHARD_COLUMNS)
        rows = read_split(out / split)
        m = manifest["splits"][split]
        seg = rows["segment_ids"]
        real = int((seg > 0).sum())
        n_segments = sum(len(set(r[r > 0].tolist())) for r in seg)
        assert m["num_rows"] == seg.shape[0]
        assert m["num_segments"] == n_segments
        assert m["real_tokens"] == real
        assert m["padded_tokens"] == seg.size - real
        assert m["loss_tokens"] == int(rows["loss_mask"].sum())
        assert m["packing_efficiency"] == pytest.approx(real / seg.size)
        kept += n_segments
    assert kept == len(sessions) == manifest["sessions_in"]
    want_languages = {lang: sum(s["lang"] == lang for s in sessions) for lang in {s["lang"] for s in sessions}}
    assert manifest["languages"] == want_languages and sum(want_languages.values()) == manifest["sessions_in"]
    assert list(manifest["languages"]) == sorted(want_languages, key=lambda lang: -want_languages[lang])  # most first
    # The held-out split is the sessions whose id hashes below the fraction.
    want_heldout = sum(
        int.from_bytes(hashlib.sha256(s["session_id"].encode()).digest()[:8], "big") < int(0.1 * 2**64) for s in sessions
    )
    assert manifest["splits"]["heldout"]["num_segments"] == want_heldout
    assert 0 < want_heldout < len(sessions)


def test_output_is_deterministic(corpus, tmp_path):
    _, _, inp = corpus
    digests = []
    for name in ("a", "b"):
        out = tmp_path / name
        assert run_tokenize(inp, out, "--template-var", "date_string=26 Jul 2024") == 0
        files = sorted(p for p in out.rglob("*") if p.is_file())
        digests.append({str(p.relative_to(out)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files})
    assert digests[0] == digests[1]


def test_rerun_replaces_the_output(corpus, tmp_path):
    _, _, inp = corpus
    out = tmp_path / "shards"
    assert run_tokenize(inp, out, seq_len=1024) == 0
    (out / "stale.txt").write_text("old")
    assert run_tokenize(inp, out, seq_len=2048) == 0
    assert not (out / "stale.txt").exists()
    assert json.loads((out / "manifest.json").read_text())["seq_len"] == 2048
    assert not list(tmp_path.glob(".shards.*"))


def test_overlong_truncate_and_drop_are_counted(corpus, tmp_path):
    _, sessions, inp = corpus
    assert run_tokenize(inp, tmp_path / "t", "--overlong", "truncate", seq_len=300) == 0
    assert run_tokenize(inp, tmp_path / "d", "--overlong", "drop", seq_len=300) == 0
    t = json.loads((tmp_path / "t" / "manifest.json").read_text())
    d = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert t["truncated"] > 0 and d["truncated"] == 0
    # Every session that truncate cut or dropped, drop drops.
    assert d["dropped"]["overlong"] == t["truncated"] + t["dropped"].get("overlong", 0)
    assert t["overlong"] == "truncate" and d["overlong"] == "drop"


def test_system_policy_is_recorded_for_mistral(corpus, tmp_path):
    _, _, inp = corpus
    assert run_tokenize(inp, tmp_path / "m", tokenizer=MISTRAL) == 0
    assert json.loads((tmp_path / "m" / "manifest.json").read_text())["system_policy"] == "fold_into_first_user"


def test_bad_inputs_give_one_line_errors(tmp_path, capsys, corpus):
    import pyarrow as pa

    _, _, inp = corpus
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"session_id": ["a"]}), bad)
    assert run_tokenize(bad, tmp_path / "o") == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing column(s) system, messages" in err and str(bad) in err

    not_parquet = tmp_path / "x.parquet"
    not_parquet.write_text("hello")
    assert run_tokenize(not_parquet, tmp_path / "o") == 2
    assert "not a readable Parquet file" in capsys.readouterr().err

    assert run_tokenize(inp, tmp_path / "o", tokenizer=str(tmp_path)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(tmp_path) in err

    empty = write_sessions(tmp_path / "empty.parquet", [])
    assert run_tokenize(empty, tmp_path / "o") == 2
    assert "no sessions left to tokenize" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_template_var_parsing():
    from data_tools.tokenize import parse_template_var

    assert parse_template_var("enable_thinking=false") == ("enable_thinking", False)
    assert parse_template_var("date_string=26 Jul 2024") == ("date_string", "26 Jul 2024")
    assert parse_template_var("n=3") == ("n", 3)
    assert parse_template_var("s=[1]") == ("s", "[1]")
    with pytest.raises(Exception, match="NAME=VALUE"):
        parse_template_var("novalue")
