"""The SQLite call cache: keys, durability across processes, one row per call."""
from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from data_tools.llm.cache import CallCache, call_key
from data_tools.llm.types import ChatRequest, ChatResult

BASE = ChatRequest.chat(
    [{"role": "system", "content": "You are Ada."}, {"role": "user", "content": "What did you write?"}],
    max_tokens=64, temperature=0.7, top_p=0.9, seed=11, stop=("\n\n",), json_schema={"type": "object"}, sample_index=0,
)


def test_key_is_stable_and_covers_every_field():
    assert call_key("m", BASE) == call_key("m", dataclasses.replace(BASE))
    variants = [
        dataclasses.replace(BASE, messages=BASE.messages[:1] + (("user", "What did you read?"),)),
        dataclasses.replace(BASE, max_tokens=65),
        dataclasses.replace(BASE, temperature=0.8),
        dataclasses.replace(BASE, top_p=1.0),
        dataclasses.replace(BASE, seed=12),
        dataclasses.replace(BASE, stop=()),
        dataclasses.replace(BASE, json_schema=None),
        dataclasses.replace(BASE, sample_index=1),
    ]
    keys = {call_key("m", v) for v in variants} | {call_key("m", BASE), call_key("other-model", BASE)}
    assert len(keys) == len(variants) + 2


@settings(max_examples=50, deadline=None)
@given(st.text(), st.text())
def test_key_does_not_confuse_role_and_content(a, b):
    one = ChatRequest.chat([{"role": "user", "content": a + b}], max_tokens=8)
    two = ChatRequest.chat([{"role": "user", "content": a}, {"role": "user", "content": b}], max_tokens=8)
    assert call_key("m", one) != call_key("m", two)


def test_put_get_roundtrip_and_wal(tmp_path):
    path = tmp_path / "calls.sqlite"
    result = ChatResult("Notes on the Analytical Engine.", "stop", 40, 9)
    with CallCache(path) as cache:
        key = call_key("m", BASE)
        assert cache.get(key) is None
        cache.put(key, "m", BASE, result)
        assert cache.get(key) == result
        assert len(cache) == 1
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT model, finish_reason FROM calls").fetchall() == [("m", "stop")]


def test_a_call_is_never_stored_twice(tmp_path):
    with CallCache(tmp_path / "c.sqlite") as cache:
        key = call_key("m", BASE)
        cache.put(key, "m", BASE, ChatResult("a", "stop"))
        with pytest.raises(sqlite3.IntegrityError):
            cache.put(key, "m", BASE, ChatResult("b", "stop"))
        assert cache.get(key).text == "a"


def test_stored_call_survives_sigkill(tmp_path):
    """A put is durable the moment it returns: the writer dies by SIGKILL right after."""
    path = tmp_path / "c.sqlite"
    code = f"""
import os, signal
from data_tools.llm.cache import CallCache, call_key
from data_tools.llm.types import ChatRequest, ChatResult
r = ChatRequest.chat([{{"role": "user", "content": "hi"}}], max_tokens=4)
c = CallCache({str(path)!r})
c.put(call_key("m", r), "m", r, ChatResult("hello", "stop", 3, 1))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    with CallCache(path) as cache:
        r = ChatRequest.chat([{"role": "user", "content": "hi"}], max_tokens=4)
        assert cache.get(call_key("m", r)) == ChatResult("hello", "stop", 3, 1)


def test_unusable_file_is_a_one_line_error(tmp_path):
    from ditto_native import DittoError

    bad = tmp_path / "not.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(DittoError, match="not a usable call cache"):
        CallCache(bad)
