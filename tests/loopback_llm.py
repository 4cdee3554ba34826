"""A deterministic OpenAI-compatible peer on loopback, for tests and benchmarks of the simulation's client side.

It answers at once, without a model:
- a request with `response_format` (a query) gets k questions (k from the
  schema's minItems), each naming a digest of the prompt so that questions
  differ between prompts, with the first sentence of the prompt's material as
  evidence (so it verifies);
- any other request gets a two-sentence in-character answer.
`respond(body) -> (content, finish_reason) | None` overrides a reply (None keeps
the default), for tests of placeholders, invented evidence or cut answers.
Every request body is kept in `seen` (unless `keep=False`, for benchmarks).

Run as a script it serves until killed and prints its base URL on stdout:
`python tests/loopback_llm.py` (a separate process keeps the server's CPU
time out of a client's measurements).
"""
from __future__ import annotations

import hashlib
import json
import re
import sys
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Respond = Callable[[dict], "tuple[str, str] | None"]
_FIRST_SENTENCE = re.compile(r"^(.+?[.。!?！？])(?:\s|$)")


def default_reply(body: dict) -> tuple[str, str]:
    prompt = body["messages"][-1]["content"]
    digest = hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:10]
    if "response_format" not in body:
        zh = any("\u4e00" <= ch <= "\u9fff" for ch in body["messages"][0]["content"][:40])
        answer = "我记得很清楚。这就是我的回答。" if zh else f"I remember it well ({digest}). That is my whole answer."
        return answer, "stop"
    schema = (body["response_format"].get("json_schema") or {}).get("schema") or {}
    k = schema.get("properties", {}).get("questions", {}).get("minItems", 3)
    lines = prompt.splitlines()
    material = lines[1] if len(lines) > 1 else prompt
    found = _FIRST_SENTENCE.match(material.strip())
    evidence = (found.group(1) if found else material)[:200]
    questions = [{"question": f"Question {i} ({digest}): what do you remember of it?", "evidence": [evidence]} for i in range(k)]
    return json.dumps({"questions": questions}, ensure_ascii=False), "stop"


class LoopbackLLM:
    """`with LoopbackLLM() as llm: ... llm.url ...`; `llm.seen` holds the request bodies."""

    def __init__(self, respond: Respond | None = None, *, keep: bool = True, port: int = 0):
        self.respond = respond
        self.keep = keep
        self.seen: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> LoopbackLLM:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reply(self, body: dict) -> dict[str, Any]:
        if self.keep:
            with self._lock:
                self.seen.append(body)
        content, finish = (self.respond and self.respond(body)) or default_reply(body)
        return {
            "id": "loopback", "object": "chat.completion", "model": body.get("model", "loopback"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": 0, "completion_tokens": len(content.split())},
        }

    def _handler_class(self):
        llm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                payload = json.dumps(llm.reply(body), ensure_ascii=False).encode("utf-8")
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler


if __name__ == "__main__":
    server = LoopbackLLM(keep=False)
    print(server.url, flush=True)
    server._server.serve_forever()
    sys.exit(0)
