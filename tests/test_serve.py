"""`ditto-jax serve` over HTTP: the OpenAI chat-completions surface, errors, streaming, JSON schemas, batching."""
from __future__ import annotations

import http.client
import json
import socket
import threading
import urllib.parse

import pytest


class Client:
    def __init__(self, base_url: str):
        parts = urllib.parse.urlsplit(base_url)
        self.host, self.port, self.base = parts.hostname, parts.port, parts.path

    def request(self, method: str, path: str, body=None, raw: bytes | None = None):
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        try:
            data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
            conn.request(method, self.base + path, body=data, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type"), response.read()
        finally:
            conn.close()

    def chat(self, **body):
        status, _, data = self.request("POST", "/chat/completions", {"model": "smollm2", **body})
        return status, json.loads(data)


@pytest.fixture(scope="module")
def client(smollm2_server) -> Client:
    return Client(smollm2_server.url)


HELLO = [{"role": "user", "content": "Say hello to Ada."}]


def test_models(client):
    status, _, data = client.request("GET", "/models")
    assert status == 200
    body = json.loads(data)
    assert body["object"] == "list" and [m["id"] for m in body["data"]] == ["smollm2"]


@pytest.mark.parametrize(
    "body, status, param",
    [
        ({"messages": []}, 400, "messages"),
        ({"messages": "hi"}, 400, "messages"),
        ({"messages": [{"role": "wizard", "content": "hi"}]}, 400, "messages[0].role"),
        ({"messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content"),
        ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]}, 400, "messages[0].content"),
        ({"messages": HELLO, "temperature": -0.5}, 400, "temperature"),
        ({"messages": HELLO, "top_p": 0}, 400, "top_p"),
        ({"messages": HELLO, "max_tokens": 0}, 400, "max_tokens"),
        ({"messages": HELLO, "max_tokens": "ten"}, 400, "max_tokens"),
        ({"messages": HELLO, "max_tokens": 10**6}, 400, "max_tokens"),  # past the context: refused, not allocated
        ({"messages": HELLO, "n": 99}, 400, "n"),
        ({"messages": HELLO, "stop": 3}, 400, "stop"),
        ({"messages": HELLO, "stream": "yes"}, 400, "stream"),
        ({"messages": HELLO, "tools": [{"type": "function"}]}, 400, "tools"),
        ({"messages": HELLO, "response_format": {"type": "xml"}}, 400, "response_format.type"),
        ({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}}, 400, "response_format.json_schema.schema"),
        ({"messages": HELLO, "response_format": {"type": "json_schema", "json_schema": {"schema": {"type": "wizard"}}}}, 400, "response_format"),
        ({"messages": HELLO, "model": "gpt-9"}, 404, "model"),
    ],
)
def test_bad_requests_get_4xx_naming_the_field(client, body, status, param):
    got, content_type, data = client.request("POST", "/chat/completions", body)
    assert (got, content_type) == (status, "application/json")
    error = json.loads(data)["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"


def test_malformed_bodies_and_routes(client):
    assert client.request("POST", "/chat/completions", raw=b"{not json")[0] == 400
    assert client.request("POST", "/chat/completions", raw=b"[1, 2]")[0] == 400
    assert client.request("GET", "/chat/completions")[0] == 405
    assert client.request("POST", "/embeddings", {"input": "x"})[0] == 404
    assert client.request("GET", "/nothing")[0] == 404
    # No Content-Length: 411, on a raw socket since http.client always sends one.
    with socket.create_connection((client.host, client.port), timeout=30) as s:
        s.sendall(f"POST {client.base}/chat/completions HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert s.recv(64).startswith(b"HTTP/1.1 411")


def test_completion_shape_stop_and_seed(client):
    status, body = client.chat(messages=HELLO, max_tokens=12, temperature=0.8, seed=5, n=2)
    assert status == 200, body
    assert body["object"] == "chat.completion" and body["model"] == "smollm2"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["message"]["role"] == "assistant" and c["finish_reason"] in ("stop", "length") for c in body["choices"])
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] and usage["completion_tokens"] <= 24
    _, again = client.chat(messages=HELLO, max_tokens=12, temperature=0.8, seed=5, n=2)
    assert [c["message"]["content"] for c in again["choices"]] == [c["message"]["content"] for c in body["choices"]]

    _, free = client.chat(messages=HELLO, max_tokens=16, temperature=0)
    text = free["choices"][0]["message"]["content"]
    cut = text.split()[1] if len(text.split()) > 1 else text[-1]
    _, stopped = client.chat(messages=HELLO, max_tokens=16, temperature=0, stop=[cut])
    assert stopped["choices"][0]["message"]["content"] == text[: text.index(cut)]
    assert stopped["choices"][0]["finish_reason"] == "stop"


def test_response_format_json_schema(client):
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string", "maxLength": 16}, "age": {"type": "integer", "minimum": 0, "maximum": 150}},
        "required": ["name", "age"],
        "additionalProperties": False,
    }
    status, body = client.chat(
        messages=[{"role": "user", "content": "Give the name and age of a famous scientist as JSON."}],
        max_tokens=40, temperature=0.7, seed=1,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": schema, "strict": True}},
    )
    assert status == 200, body
    value = json.loads(body["choices"][0]["message"]["content"])
    assert set(value) == {"name", "age"} and isinstance(value["name"], str) and 0 <= value["age"] <= 150

    status, body = client.chat(messages=HELLO, max_tokens=24, temperature=0, response_format={"type": "json_object"})
    assert status == 200
    content = body["choices"][0]["message"]["content"]
    if body["choices"][0]["finish_reason"] == "stop":
        assert isinstance(json.loads(content), dict)
    else:
        assert content.startswith("{")


def test_streaming_matches_the_plain_reply(client):
    request = {"model": "smollm2", "messages": HELLO, "max_tokens": 12, "temperature": 0}
    _, plain = client.chat(**{k: v for k, v in request.items() if k != "model"})
    status, content_type, data = client.request("POST", "/chat/completions", {**request, "stream": True, "stream_options": {"include_usage": True}})
    assert status == 200 and content_type.startswith("text/event-stream")
    events = [line[len("data: "):] for line in data.decode().split("\n\n") if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    pieces = [c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"]]
    assert len([p for p in pieces if p]) > 1  # sent in pieces, not as one blob
    assert "".join(pieces) == plain["choices"][0]["message"]["content"]
    finals = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert finals == [plain["choices"][0]["finish_reason"]]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == plain["usage"]["completion_tokens"]


def test_concurrent_requests_share_batches(client):
    start = _health(client)
    results = [None] * 6

    def call(i):
        results[i] = client.chat(messages=[{"role": "user", "content": f"Count to {i + 2}."}], max_tokens=8, temperature=0)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(status == 200 for status, _ in results)
    end = _health(client)
    assert end["requests"] - start["requests"] == 6
    assert end["batches"] - start["batches"] < 6  # some requests rode together


def _health(client: Client) -> dict:
    conn = http.client.HTTPConnection(client.host, client.port, timeout=30)
    try:
        conn.request("GET", "/health")
        return json.loads(conn.getresponse().read())
    finally:
        conn.close()
