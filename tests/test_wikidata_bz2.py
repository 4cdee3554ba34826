"""bzip2 dumps decoded in parallel across blocks: the same entities as the
plain text and as a one-thread decoder, on single- and multi-stream files, a
clear error with the byte offset for a file cut mid-block, and a killed scan
that resumes from the block holding its checkpoint."""
from __future__ import annotations

import bz2
import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import ditto_native
import polars as pl

from data_tools.characters import CharactersConfig, scan_dump
from data_tools.cli import main

REPO = Path(__file__).resolve().parents[1]


def _place(rng: random.Random, n: int) -> dict:
    label = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(6, 14)))
    return {"type": "item", "id": f"Q{n}", "labels": {"en": {"language": "en", "value": label}},
            "claims": {"P31": [{"mainsnak": {"snaktype": "value", "property": "P31", "datavalue": {
                "value": {"entity-type": "item", "numeric-id": 515, "id": "Q515"}, "type": "wikibase-entityid"}},
                "type": "statement", "id": f"Q{n}$p31", "rank": "normal"}]},
            "sitelinks": {}}


def _human(rng: random.Random, n: int) -> dict:
    e = _place(rng, n)
    e["claims"]["P31"][0]["mainsnak"]["datavalue"]["value"] = {"entity-type": "item", "numeric-id": 5, "id": "Q5"}
    e["labels"]["zh"] = {"language": "zh", "value": "人物" + str(n)}
    e["sitelinks"] = {f"x{i}wiki": {"site": f"x{i}wiki", "title": "t", "badges": []} for i in range(n % 7)}
    return e


def dump_text(n: int = 6000, seed: int = 0) -> bytes:
    """A dump of places with a human every 10 lines: at bzip2 level 1 (100 kB
    blocks) it spans several blocks."""
    rng = random.Random(seed)
    lines = [json.dumps((_human if i % 10 == 0 else _place)(rng, i + 1), separators=(",", ":")) for i in range(n)]
    return ("[\n" + ",\n".join(lines) + "\n]\n").encode()


def _config(chunk_bytes: int = 1 << 20) -> CharactersConfig:
    return CharactersConfig(properties=("P27",), per_category=None, chunk_bytes=chunk_bytes)


def _rows(path: Path, chunk_bytes: int = 1 << 20):
    scan = scan_dump(path, _config(chunk_bytes), progress=False)
    return scan.rows.sort("character_id", "lang"), scan.stats


def test_single_and_multi_stream_match_the_plain_dump(tmp_path: Path):
    text = dump_text()
    plain = tmp_path / "d.json"
    plain.write_bytes(text)
    single = tmp_path / "d.json.bz2"
    single.write_bytes(bz2.compress(text, 1))
    assert len(single.read_bytes()) > 150_000  # several blocks
    thirds = [0, len(text) // 3, 2 * len(text) // 3, len(text)]
    multi = tmp_path / "multi.json.bz2"
    multi.write_bytes(b"".join(bz2.compress(text[a:b], 1) for a, b in zip(thirds, thirds[1:])))
    want, _ = _rows(plain)
    assert want.height == 1200
    for path in (single, multi):
        got, stats = _rows(path, chunk_bytes=50_000)
        assert got.equals(want), path.name
        assert stats["stream_error"] is None
        # The parallel decoder and the one-thread decoder give the same text.
        assert ditto_native.wikidata_decompressed_len(path) == len(text)
        assert ditto_native.wikidata_decompressed_len(path, parallel=False) == len(text)


def test_file_cut_mid_block_keeps_the_whole_blocks_and_names_the_offset(tmp_path: Path):
    text = dump_text()
    whole = bz2.compress(text, 1)
    cut = whole[: len(whole) * 2 // 3]
    path = tmp_path / "cut.json.bz2"
    path.write_bytes(cut)
    # The one-thread reference: what a streaming decoder yields before the cut.
    readable = bz2.BZ2Decompressor().decompress(cut)
    assert 0 < len(readable) < len(text)
    got, stats = _rows(path, chunk_bytes=50_000)
    err = stats["stream_error"]
    assert err is not None and "compressed byte" in err["message"], err
    offset = int(err["message"].split("compressed byte ")[1].split(":")[0])
    assert 0 < offset < len(cut)
    assert stats["lines"] == readable.count(b"\n")
    partial = tmp_path / "partial.json"
    partial.write_bytes(readable[: readable.rindex(b"\n") + 1])
    want, _ = _rows(partial)
    assert got.equals(want)


def test_killed_bz2_scan_resumes_to_the_same_table(tmp_path: Path):
    path = tmp_path / "dump.json.bz2"
    path.write_bytes(bz2.compress(dump_text(), 1))
    common = ["--wikidata", str(path), "--per-category", "0", "--properties", "P27",
              "--chunk-bytes", "60000", "--no-progress"]
    reference = tmp_path / "reference.parquet"
    assert main(["characters", *common, "--out", str(reference)]) == 0
    out = tmp_path / "resumed.parquet"
    env = {k: v for k, v in os.environ.items() if k != "DITTO_TEST_KILL_AFTER_CHUNKS"}

    def cli(kill_after: int | None) -> subprocess.CompletedProcess:
        e = dict(env, **({"DITTO_TEST_KILL_AFTER_CHUNKS": str(kill_after)} if kill_after else {}))
        return subprocess.run([sys.executable, "-m", "data_tools.cli", "characters", *common, "--out", str(out)],
                              cwd=REPO, env=e, capture_output=True, text=True, timeout=120)

    first = cli(4)
    assert first.returncode == -signal.SIGKILL, first.stderr
    done = cli(None)
    assert done.returncode == 0, done.stderr
    resumed_line = int(done.stderr.split("resumed from a checkpoint at line ")[1].split()[0])
    assert resumed_line > 1
    assert pl.read_parquet(out).equals(pl.read_parquet(reference))
