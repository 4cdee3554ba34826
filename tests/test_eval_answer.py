"""Multi-turn answering: the system intro where the template wants it, full history per turn, failures, endpoints."""
from __future__ import annotations

import socket
from types import SimpleNamespace

import pytest
from ditto_native import DittoError

from data_tools.eval.answer import FOLD, NATIVE, AnswerSettings, Conversation, answer_conversations, opening, template_system_policy
from data_tools.llm.cache import CallCache
from data_tools.llm.runner import CallRunner
from data_tools.llm.types import CallFailed
from eval_fixtures import ScriptedBackend, eval_record, one_line_error, run_eval_cli, write_jsonl


def test_system_policy_follows_the_template(shared_dir):
    from ditto_jax.tokenizer import load_tokenizer

    def policy(folder):
        bundle = load_tokenizer(shared_dir / "tokenizers" / folder)
        return template_system_policy(SimpleNamespace(engine=SimpleNamespace(bundle=bundle), model_name=folder))

    assert policy("mistral-instruct") == FOLD  # its template drops a system message: tokenize folds it too
    assert policy("qwen2.5-instruct") == NATIVE
    assert template_system_policy(SimpleNamespace(model_name="http")) == NATIVE  # over HTTP the server's template decides
    assert template_system_policy(SimpleNamespace(model_name="http"), FOLD) == FOLD


def test_opening():
    assert opening("You are Laozi.", "Hi?", NATIVE) == [{"role": "system", "content": "You are Laozi."}, {"role": "user", "content": "Hi?"}]
    assert opening("You are Laozi.", "Hi?", FOLD) == [{"role": "user", "content": "You are Laozi.\n\nHi?"}]
    assert opening(None, "Hi?", NATIVE) == [{"role": "user", "content": "Hi?"}]


def test_each_turn_sees_the_whole_history(tmp_path):
    backend = ScriptedBackend(lambda r: f"answer {len(r.messages)} ")
    conversations = [Conversation("a", "You are A.", ("one?", "two?", "three?")), Conversation("b", "You are B.", ("only?",))]
    with CallCache(tmp_path / "c.sqlite") as cache:
        done = answer_conversations(conversations, CallRunner(backend, cache), AnswerSettings(max_tokens=8), FOLD)
    assert [d.answers for d in done] == [["answer 1", "answer 3", "answer 5"], ["answer 1"]]
    last = [r for r in backend.seen if len(r.messages) == 5][0]
    assert [m[0] for m in last.messages] == ["user", "assistant", "user", "assistant", "user"]
    assert last.messages[0][1] == "You are A.\n\none?" and last.messages[1][1] == "answer 1"
    assert len({r.seed for r in backend.seen}) == 4


def test_a_failed_answer_stops_its_session_and_the_run_says_so(tmp_path):
    class Failing(ScriptedBackend):
        def complete(self, requests):
            for i, request in enumerate(requests):
                self.seen.append(request)
                if "bad" in request.messages[-1][1]:
                    yield i, CallFailed("5xx", "HTTP 503: busy")
                else:
                    yield from [(i, r) for _, r in super().complete([request])]

    backend = Failing(lambda r: "fine")
    conversations = [Conversation("a", None, ("bad?", "never asked?")), Conversation("b", None, ("good?", "good too?"))]
    with CallCache(tmp_path / "c.sqlite") as cache:
        with pytest.raises(DittoError, match=r"1 answer call\(s\) failed after every retry \(first: 5xx: HTTP 503: busy\)"):
            answer_conversations(conversations, CallRunner(backend, cache), AnswerSettings(), NATIVE)
        assert len(cache) == 2  # the other session's answers are kept for the re-run
    assert not any("never asked" in r.messages[-1][1] for r in backend.seen)


def test_unreachable_endpoint_is_one_line(tmp_path):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    path = write_jsonl(tmp_path / "eval.jsonl", [eval_record("Confucius", "en", ["q?"], [0])])
    for model, judge, option in (
        (["--endpoint", f"http://127.0.0.1:{port}/v1"], ["--judge", "smollm2"], "--endpoint"),
        (["--model", "smollm2"], ["--judge-endpoint", f"http://127.0.0.1:{port}/v1"], "--judge-endpoint"),
    ):
        extra = ["--model-name", "m"] if option == "--endpoint" else ["--judge-model-name", "j"]
        proc = run_eval_cli(["run", "--eval", path, *model, *judge, *extra, "--out", tmp_path / "r.jsonl"], timeout=300)
        assert proc.returncode == 2
        line = one_line_error(proc.stderr, "run")
        assert f"{option} http://127.0.0.1:{port}/v1: unreachable" in line
        assert "loading" not in proc.stderr  # it fails before any model loads


@pytest.mark.parametrize(
    "args, message",
    [
        (["--judge", "smollm2"], "give --model REF, or --endpoint URL with --model-name NAME"),
        (["--model", "smollm2"], "give --judge REF, or --judge-endpoint URL with --judge-model-name NAME"),
        (["--endpoint", "http://127.0.0.1:9/v1", "--judge", "smollm2"], "--endpoint needs --model-name"),
        (["--model", "smollm2", "--model-name", "x", "--judge", "smollm2"], "--model-name goes with --endpoint"),
        (["--model", "smollm2", "--judge", "smollm2", "--judge-samples", "0"], "--judge-samples must be >= 1"),
        (["--model", "smollm2", "--judge", "smollm2", "--limit", "0"], "--limit must be >= 1"),
        (["--model", "smollm2", "--judge", "smollm2", "--max-answer-tokens", "0"], "--max-new-tokens must be >= 1"),
        (["--model", "smollm2", "--judge", "smollm2", "--judge-max-tokens", "0"], "--judge-max-new-tokens must be >= 1"),
    ],
)
def test_bad_options(tmp_path, capsys, args, message):
    from data_tools.eval.cli import main

    path = write_jsonl(tmp_path / "eval.jsonl", [eval_record("Confucius", "en", ["q?"], [0])])
    assert main(["run", "--eval", str(path), *args, "--out", str(tmp_path / "r.jsonl")]) == 2
    assert message in one_line_error(capsys.readouterr().err, "run")
