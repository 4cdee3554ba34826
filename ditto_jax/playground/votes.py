"""Blind preference votes: checked on arrival, appended to a JSONL file, one line each.

A record (one JSON object per line):

    {"timestamp": "2026-12-03T18:40:02.118Z", "character": "Isaac Newton", "character_id": "Q935",
     "language": "en", "conversation": "5f0c9a1e7d2b4c3a", "turn": 1, "model_a": "seed", "model_b": "tuned",
     "choice": "b"}

`model_a` was shown on the left and `model_b` on the right; `choice` is `a`,
`b` or `tie`. `character`, `character_id` and `language` are null for a custom
system message. `conversation` is a random id the page draws per chat, so
that a report can resample whole conversations. `ditto-eval report` reads
these files.

Durability: each record is one `write` on a file opened with O_APPEND, then
`fsync`, before the request is answered. So an acknowledged vote survives a
crash, and concurrent appends never interleave inside a line. A crash during a
write can leave an unacknowledged partial line at the end; opening the log
trims it, so the file stays valid JSONL.
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections.abc import Collection
from pathlib import Path

from ditto_jax.atomic_io import fsync_dir
from ditto_native import DittoError

log = logging.getLogger(__name__)

CHOICES = ("a", "b", "tie")
MAX_TEXT = 500  # characters in a label, id or language code; longer is not a character name


class VoteError(ValueError):
    """A vote the server refuses; the message names the field."""

    def __init__(self, message: str, field: str):
        super().__init__(message)
        self.field = field


def vote_record(body: object, served_models: Collection[str], *, now: dt.datetime | None = None) -> dict:
    """The record to store for a vote request body; raises VoteError naming the bad field."""
    if not isinstance(body, dict):
        raise VoteError("the body must be a JSON object", "body")
    record: dict = {"timestamp": _timestamp(now or dt.datetime.now(dt.timezone.utc))}
    for field in ("character", "character_id", "language", "conversation"):
        value = body.get(field)
        if value is not None and (not isinstance(value, str) or len(value) > MAX_TEXT):
            raise VoteError(f"'{field}' must be a string of at most {MAX_TEXT} characters, or null", field)
        record[field] = (value.strip() or None) if isinstance(value, str) else None
    turn = body.get("turn")
    if isinstance(turn, bool) or not isinstance(turn, int) or turn < 1:
        raise VoteError("'turn' must be an integer >= 1", "turn")
    record["turn"] = turn
    for field in ("model_a", "model_b"):
        name = body.get(field)
        if not isinstance(name, str) or name not in served_models:
            raise VoteError(f"'{field}' must name a served model ({', '.join(sorted(served_models))})", field)
        record[field] = name
    if record["model_a"] == record["model_b"]:
        raise VoteError("'model_a' and 'model_b' must be two different models", "model_b")
    choice = body.get("choice")
    if choice not in CHOICES:
        raise VoteError(f"'choice' must be one of {', '.join(CHOICES)}", "choice")
    record["choice"] = choice
    return record


def _timestamp(now: dt.datetime) -> str:
    return now.astimezone(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class VoteLog:
    """An append-only JSONL file of vote records, safe across threads and crashes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._lock = threading.Lock()
        if self.path.is_dir():
            raise DittoError(f"--votes {self.path}: is a directory")
        if not self.path.parent.is_dir():
            raise DittoError(f"--votes {self.path}: folder {self.path.parent} does not exist")
        created = not self.path.exists()
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise DittoError(f"--votes {self.path}: cannot open for appending ({exc.strerror})") from None
        self._trim_partial_line()
        if created:  # the new directory entry must survive a crash too
            fsync_dir(self.path.parent)

    def _trim_partial_line(self) -> None:
        size = os.fstat(self._fd).st_size
        if size == 0:
            return
        with open(self.path, "rb") as f:
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("%s: dropping %d bytes of an unfinished last line (a write cut by a crash)", self.path, len(data) - end)
            os.truncate(self.path, end)
            os.fsync(self._fd)

    def append(self, record: dict) -> None:
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            start = os.fstat(self._fd).st_size
            try:
                written = os.write(self._fd, line)
                if written != len(line):  # a regular file only writes short when the disk is full
                    raise OSError(f"{self.path}: short write ({written} of {len(line)} bytes)")
                os.fsync(self._fd)
            except OSError:
                os.ftruncate(self._fd, start)  # no half line for the next record to run into
                raise

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
