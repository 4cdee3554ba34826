"""A directory given where a command writes a file is one line naming it, for each command, never a traceback."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from clean_factory import frame, good_session

REPO = Path(__file__).resolve().parents[1]


def _run(module: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], cwd=REPO, capture_output=True, text=True, timeout=600)


def _vote_file(path: Path) -> Path:
    vote = {
        "timestamp": "2026-12-03T00:00:00Z", "character": "Ada Lovelace", "character_id": "Q7259", "language": "en",
        "conversation": "c1", "turn": 1, "model_a": "seed", "model_b": "tuned", "choice": "b",
    }
    path.write_text(json.dumps(vote) + "\n")
    return path


@pytest.mark.parametrize("command", ["characters", "clean", "report"])
def test_directory_as_out_file_is_one_line(tmp_path, command):
    out = tmp_path / "taken"
    out.mkdir()
    if command == "characters":
        proc = _run("data_tools.cli", "characters", "--sample", "--out", str(out), "--no-progress")
        prog = "ditto-data characters"
    elif command == "clean":
        dialogues = tmp_path / "d.parquet"
        rng = random.Random(0)
        frame([good_session("en", rng) for _ in range(3)]).write_parquet(dialogues)
        proc = _run("data_tools.cli", "clean", "--in", str(dialogues), "--out", str(out), "--quarantine", str(tmp_path / "q.parquet"))
        prog = "ditto-data clean"
    else:
        proc = _run("data_tools.eval.cli", "report", str(_vote_file(tmp_path / "votes.jsonl")), "--out", str(out))
        prog = "ditto-eval report"
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith(prog)]
    assert lines == [f"{prog}: error: {out}: is a directory; expected a file path"], proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.is_dir() and not any(out.iterdir())  # the directory is left as it was
