"""`ditto-jax generate` / `chat` as a user runs them: a subprocess, stdout holding only replies."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from ditto_jax.generation import GenerationRequest

REPO = Path(__file__).resolve().parents[1]


def _run(args, stdin=None, timeout=600):
    # `-m` from the repository root: the tree under test, whatever the console script points at.
    return subprocess.run([sys.executable, "-m", "ditto_jax.cli", *args], input=stdin, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def test_generate_prints_only_the_reply(smollm2_engine):
    system, prompt = "You are a geography teacher.", "What is the capital of France?"
    messages = [{"role": "system", "content": system}, {"role": "user", "content": prompt}]
    want = smollm2_engine.generate([GenerationRequest(messages, max_new_tokens=8, temperature=0)])[0].text
    result = _run(["generate", "--model", "smollm2", "--system", system, "--prompt", prompt, "--temperature", "0", "--max-new-tokens", "8"])
    assert result.returncode == 0, result.stderr
    assert want and result.stdout == want + "\n"


def test_chat_answers_two_turns_from_a_pipe(smollm2_engine):
    turns = ["What is the capital of France?", "And of Italy?"]
    history, want = [], []
    for turn in turns:
        history.append({"role": "user", "content": turn})
        reply = smollm2_engine.generate([GenerationRequest(list(history), max_new_tokens=12, temperature=0)])[0].text
        history.append({"role": "assistant", "content": reply})
        want.append(reply)
    result = _run(["chat", "--model", "smollm2", "--temperature", "0", "--max-new-tokens", "12"], stdin="\n".join(turns) + "\n\n/exit\nnot read\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "".join(r + "\n" for r in want)


def test_bad_model_is_a_one_line_error():
    result = _run(["generate", "--model", "/no/such/model.gguf", "--prompt", "hi"])
    assert result.returncode != 0 and result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ditto-jax generate: error: /no/such/model.gguf"), result.stderr


def test_bad_option_fails_before_loading():
    result = _run(["generate", "--model", "smollm2", "--prompt", "hi", "--temperature", "-1"], timeout=120)
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip() == "ditto-jax generate: error: arguments: temperature must be >= 0 (got -1.0)"
