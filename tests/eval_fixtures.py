"""Shared pieces of the `ditto-eval` tests: evaluation records, a scripted backend, a CLI runner."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from data_tools.llm.types import ChatRequest, ChatResult

REPO = Path(__file__).resolve().parents[1]


def eval_record(label: str, lang: str, prompts: Sequence[str], labels: Sequence[int], *, others=("Ada Lovelace", "Confucius", "Sherlock Holmes"), place: str = "top", bracketed: bool = True) -> dict:
    """One session in the published layout; scoring fields at top level or under meta."""
    names = [label, *[o for o in others if o != label]][:4]
    cands = [f"[{n}] someone called {n}" if bracketed else n for n in names]
    scoring = {
        "role_consist_cands": cands,
        "rejection_labels": list(labels),
        "evidence": [[f"{label} fact {i}"] for i in range(len(prompts))],
    }
    meta = {"label": label, "description": f"the {label}", "lang": lang, "summary": f"{label} is well known."}
    record = {"system": f"You are {label}, the {label}", "prompts": list(prompts), "meta": meta}
    if place == "top":
        record.update(scoring)
    else:
        meta.update(scoring)
    return record


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


class ScriptedBackend:
    """A backend whose reply to each request is `reply(request)`; it logs every request it gets."""

    def __init__(self, reply: Callable[[ChatRequest], str], model_name: str = "scripted"):
        self.reply = reply
        self.model_name = model_name
        self.seen: list[ChatRequest] = []

    def complete(self, requests):
        for i, request in enumerate(requests):
            self.seen.append(request)
            yield i, ChatResult(self.reply(request), "stop", 10, 5)

    def retry_counts(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        pass


def run_eval_cli(args: Sequence[str], env_extra: dict | None = None, timeout: float = 1500) -> subprocess.CompletedProcess:
    """`ditto-eval ARGS` from this worktree, as a separate process."""
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, "-m", "data_tools.eval.cli", *map(str, args)], capture_output=True, text=True, env=env,
        timeout=timeout, cwd=REPO,
    )


def one_line_error(stderr: str, command: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("WARNING")]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"ditto-eval {command}: error: "), stderr
    return lines[0]
