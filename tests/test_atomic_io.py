"""The one atomic writer: whole-or-nothing files and directories, durable line appends."""
from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

import pytest

from ditto_jax.atomic_io import append_line_durable, atomic_path, write_text_atomic


def test_file_replaced_whole(tmp_path):
    target = tmp_path / "sub" / "a.json"
    write_text_atomic(target, "old")
    write_text_atomic(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in target.parent.iterdir()] == ["a.json"]  # no temporary left behind


def test_failed_write_keeps_old_content(tmp_path):
    target = tmp_path / "a.txt"
    write_text_atomic(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("writer crashed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_directory_swapped_in_one_rename(tmp_path):
    target = tmp_path / "shards"
    for generation in ("one", "two"):
        with atomic_path(target) as tmp:
            tmp.mkdir()
            (tmp / "part.txt").write_text(generation)
    assert (target / "part.txt").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shards"]


def test_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        with atomic_path(tmp_path / "x"):
            pass
    assert not (tmp_path / "x").exists()


def _append_many(path: str, worker: int, n: int) -> None:
    for i in range(n):
        append_line_durable(path, json.dumps({"worker": worker, "i": i, "pad": "x" * 500}))


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / "votes.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(str(path), w, 50)) for w in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(records) == 150
    assert sorted((r["worker"], r["i"]) for r in records) == [(w, i) for w in range(3) for i in range(50)]


def test_append_refuses_embedded_newline(tmp_path):
    with pytest.raises(ValueError):
        append_line_durable(tmp_path / "v.jsonl", "a\nb")
    assert not Path(tmp_path / "v.jsonl").exists()


def test_a_directory_where_a_file_goes_names_the_directory(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    with pytest.raises(IsADirectoryError) as exc:
        write_text_atomic(target, "x")
    assert exc.value.filename == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
