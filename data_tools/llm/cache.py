"""A durable store of finished LLM calls: SQLite in WAL mode, one row per call.

Each call is committed the moment it finishes, with `synchronous=FULL`, so a
`kill -9` (or a power cut) loses at most the calls still in flight. A re-run
computes the same keys and reads the stored replies instead of calling again.

The key is a SHA-256 over the model name and every field of the request that
changes the reply (messages, JSON schema, sampling parameters, seed, sample
index), serialised canonically.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

from ditto_native import DittoError

from data_tools.llm.types import ChatRequest, ChatResult

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    created REAL NOT NULL
)
"""


def call_key(model: str, request: ChatRequest) -> str:
    """Hex SHA-256 identifying one call: same key, same call."""
    canonical = json.dumps({"model": model, **request.identity()}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CallCache:
    """`get(key)` / `put(key, model, request, result)` over one SQLite file.

    >>> cache = CallCache("calls.sqlite")  # doctest: +SKIP
    >>> cache.get(call_key("smollm2", request)) is None  # doctest: +SKIP
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), isolation_level=None)  # autocommit: one transaction per put
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=30000")
            self._db.execute(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise DittoError(f"{self.path}: not a usable call cache: {exc}") from None

    def get(self, key: str) -> ChatResult | None:
        row = self._db.execute(
            "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM calls WHERE key = ?", (key,)
        ).fetchone()
        return None if row is None else ChatResult(*row)

    def put(self, key: str, model: str, request: ChatRequest, result: ChatResult) -> None:
        # INSERT, not REPLACE: a key stored twice would mean a call was made twice, which must not happen.
        self._db.execute(
            "INSERT INTO calls VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key, model, json.dumps(request.identity(), ensure_ascii=False, sort_keys=True),
                result.text, result.finish_reason, int(result.prompt_tokens), int(result.completion_tokens), time.time(),
            ),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def keys(self) -> set[str]:
        return {row[0] for row in self._db.execute("SELECT key FROM calls")}

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> CallCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
