"""The OpenAI-compatible HTTP backend against faults on loopback (no model needed).

The fault proxy answers these requests itself; tests that need real replies
live in test_simulate_smollm2.py, against a real `ditto-jax serve`.
"""
from __future__ import annotations

import socket

import pytest
from ditto_native import DittoError

from data_tools.llm.http_backend import HttpBackend, api_key_from_env
from data_tools.llm.retry import RetryPolicy
from data_tools.llm.types import CallFailed, ChatRequest
from fault_proxy import FaultProxy

NOWHERE = "http://127.0.0.1:9/v1"  # upstream never reached: every scripted fault is answered by the proxy
FAST = RetryPolicy(max_retries=3, base_delay_s=0.01, max_delay_s=0.05)
REQUEST = ChatRequest.chat([{"role": "user", "content": "Who are you?"}], max_tokens=8, seed=3)
JSON_REQUEST = ChatRequest.chat([{"role": "user", "content": "JSON please"}], max_tokens=8, json_schema={"type": "object"})


def complete_one(backend: HttpBackend, request: ChatRequest):
    [(index, result)] = list(backend.complete([request]))
    assert index == 0
    return result


def test_server_errors_are_retried_then_counted():
    with FaultProxy(NOWHERE, ["500", "503", "502", "500"]) as proxy:
        backend = HttpBackend([proxy.url], "m", retry=FAST)
        result = complete_one(backend, REQUEST)
    assert isinstance(result, CallFailed) and result.reason == "5xx"
    assert backend.retry_counts() == {"5xx": 3}
    assert len(proxy.seen) == 4  # the first try and 3 retries


def test_retry_after_is_honoured():
    with FaultProxy(NOWHERE, ["429:1", "400"]) as proxy:
        backend = HttpBackend([proxy.url], "m", retry=FAST)
        result = complete_one(backend, REQUEST)
    assert isinstance(result, CallFailed) and result.reason == "http_400"
    assert backend.retry_counts() == {"429": 1}
    assert proxy.seen[1].at - proxy.seen[0].at >= 1.0  # the backoff alone would wait at most 0.01 s


def test_dropped_connections_and_bad_bodies_are_retried():
    with FaultProxy(NOWHERE, ["drop", "badjson", "drop", "400"]) as proxy:
        backend = HttpBackend([proxy.url], "m", retry=FAST)
        result = complete_one(backend, REQUEST)
    assert isinstance(result, CallFailed) and result.reason == "http_400"
    assert backend.retry_counts() == {"connection": 2, "bad_body": 1}


def test_refused_connection_gives_up_with_a_reason():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    backend = HttpBackend([f"http://127.0.0.1:{port}/v1"], "m", retry=RetryPolicy(max_retries=2, base_delay_s=0.01))
    result = complete_one(backend, REQUEST)
    assert isinstance(result, CallFailed) and result.reason == "connection"
    assert backend.retry_counts() == {"connection": 2}


def test_auth_failure_stops_the_run_without_leaking_the_key():
    with FaultProxy(NOWHERE, ["401"]) as proxy:
        backend = HttpBackend([proxy.url], "m", api_key="sk-test-secret-123", retry=FAST)
        with pytest.raises(DittoError) as err:
            complete_one(backend, REQUEST)
    assert "HTTP 401" in str(err.value) and proxy.url in str(err.value)
    assert "sk-test-secret-123" not in str(err.value)
    assert proxy.seen[0].headers["Authorization"] == "Bearer sk-test-secret-123"


def test_json_requests_send_response_format_and_weaken_it_on_400():
    with FaultProxy(NOWHERE, ["400", "400", "400"]) as proxy:
        backend = HttpBackend([proxy.url], "m", retry=FAST)
        result = complete_one(backend, JSON_REQUEST)
    assert isinstance(result, CallFailed) and result.reason == "http_400"
    formats = [s.body.get("response_format") for s in proxy.seen]
    assert formats == [
        {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}, "strict": True}},
        {"type": "json_object"},
        None,
    ]
    assert backend.retry_counts() == {"format_downgrade": 2}


def test_request_body_carries_the_sampling_fields():
    request = ChatRequest.chat([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}], max_tokens=12,
                               temperature=0.3, top_p=0.9, seed=77, stop=("END",))
    with FaultProxy(NOWHERE, ["400"]) as proxy:
        complete_one(HttpBackend([proxy.url], "name-x", retry=FAST), request)
    assert proxy.seen[0].body == {
        "model": "name-x", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        "max_tokens": 12, "temperature": 0.3, "top_p": 0.9, "seed": 77, "stop": ["END"],
    }


def test_endpoints_share_the_load():
    # One at a time, equally idle endpoints take turns.
    with FaultProxy(NOWHERE, ["400"] * 6) as one, FaultProxy(NOWHERE, ["400"] * 6) as two:
        results = list(HttpBackend([one.url, two.url], "m", concurrency=1, retry=FAST).complete([REQUEST] * 6))
    assert sorted(i for i, _ in results) == list(range(6))
    assert len(one.seen) == 3 and len(two.seen) == 3
    # A slow endpoint holds its requests longer, so the idle one takes more.
    with FaultProxy(NOWHERE, ["400"] * 8, delay_s=0.5) as slow, FaultProxy(NOWHERE, ["400"] * 8) as fast:
        results = list(HttpBackend([slow.url, fast.url], "m", concurrency=2, retry=FAST).complete([REQUEST] * 8))
    assert len(results) == 8 and all(r.reason == "http_400" for _, r in results)
    assert len(fast.seen) > len(slow.seen) >= 1


def test_bad_endpoint_options():
    for url in ("ftp://x/v1", "localhost:8000", "http://:80", "http://user:sk-123@host/v1"):
        with pytest.raises(DittoError, match="--endpoint"):
            HttpBackend([url], "m")
    with pytest.raises(DittoError, match="--model-name"):
        HttpBackend(["http://127.0.0.1:1/v1"], "")


def test_api_key_env_fallback(monkeypatch):
    monkeypatch.delenv("DITTO_API_KEY", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "from-openai")
    assert api_key_from_env() == "from-openai"
    monkeypatch.setenv("DITTO_API_KEY", "from-ditto")
    assert api_key_from_env() == "from-ditto"
    monkeypatch.delenv("DITTO_API_KEY")
    monkeypatch.delenv("OPENAI_API_KEY")
    assert api_key_from_env() is None
