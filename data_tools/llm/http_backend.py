"""OpenAI-compatible chat completions over HTTP, with retries and several endpoints.

Works with vLLM, SGLang, llama.cpp's server, hosted APIs and `ditto-jax serve`.

- N worker threads keep up to N requests in flight; each thread keeps one
  keep-alive connection per endpoint.
- Each attempt goes to the endpoint with the fewest requests in flight, skipping
  one that just refused a connection, so several endpoints share the load.
- 429, 5xx, dropped connections, timeouts and unreadable bodies are retried
  with exponential backoff and full jitter, waiting at least `Retry-After`.
- 401/403/404 stop the run (every call would fail the same way); other 4xx
  fail just that call. A JSON request that an endpoint rejects with 400 is sent
  again with a weaker `response_format` (json_schema, then json_object, then
  none); the lenient parser copes with whatever comes back.
- The API key travels only in the Authorization header and is never logged.
"""
from __future__ import annotations

import http.client
import json
import logging
import os
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed

from ditto_native import DittoError

from data_tools.llm.retry import RETRYABLE_STATUSES, RetryPolicy, parse_retry_after
from data_tools.llm.types import CallFailed, ChatRequest, ChatResult

log = logging.getLogger(__name__)

FATAL_STATUSES = frozenset({401, 403, 404})
_FORMAT_LEVELS = ("json_schema", "json_object", "none")


def api_key_from_env(primary: str = "DITTO_API_KEY") -> str | None:
    """The API key: `primary`, else OPENAI_API_KEY, else None (local servers need none)."""
    return os.environ.get(primary) or os.environ.get("OPENAI_API_KEY") or None


class Endpoint:
    """One base URL such as http://127.0.0.1:8000/v1 (a bare host gets /v1)."""

    def __init__(self, url: str):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DittoError(f"--endpoint {url!r}: expected an http:// or https:// base URL")
        if parts.username or parts.password:
            raise DittoError("--endpoint must not carry credentials; put the key in DITTO_API_KEY")
        self.url = url
        self.https = parts.scheme == "https"
        self.host = parts.hostname
        try:
            self.port = parts.port or (443 if self.https else 80)
        except ValueError:
            raise DittoError(f"--endpoint {url!r}: bad port") from None
        base = parts.path.rstrip("/") or "/v1"
        self.chat_path = base + "/chat/completions"
        self.in_flight = 0
        self.down_until = 0.0  # after a refused connection, other endpoints go first until then

    def connect(self, timeout: float) -> http.client.HTTPConnection:
        if self.https:
            return http.client.HTTPSConnection(self.host, self.port, timeout=timeout)
        return http.client.HTTPConnection(self.host, self.port, timeout=timeout)


class _Retry(Exception):
    def __init__(self, reason: str, detail: str, retry_after_s: float | None = None):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.retry_after_s = retry_after_s


class _Fatal(Exception):
    pass


class HttpBackend:
    """`complete(requests)` against one or more OpenAI-compatible endpoints.

    >>> backend = HttpBackend(["http://127.0.0.1:8000/v1"], "smollm2", concurrency=8)  # doctest: +SKIP
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        model_name: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout_s: float = 600.0,
        retry: RetryPolicy = RetryPolicy(),
        seed: int | None = None,
    ):
        if not endpoints:
            raise DittoError("no --endpoint given")
        if not model_name:
            raise DittoError("--model-name is required with --endpoint")
        if concurrency < 1:
            raise DittoError(f"--concurrency must be >= 1 (got {concurrency})")
        self.endpoints = [Endpoint(u) for u in endpoints]
        self.model_name = model_name
        self.concurrency = concurrency
        self.timeout_s = timeout_s
        self.retry = retry
        self._headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        self._retries: Counter[str] = Counter()
        self._format_level = 0
        self._next = 0  # round-robin start among equally loaded endpoints
        self._local = threading.local()
        self._open: list[http.client.HTTPConnection] = []  # every connection made, to close at the end

    # ---- Backend interface --------------------------------------------------------------

    def complete(self, requests: Sequence[ChatRequest]) -> Iterator[tuple[int, ChatResult | CallFailed]]:
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, max(1, len(requests))), thread_name_prefix="llm-http")
        try:
            futures = {pool.submit(self._call, r): i for i, r in enumerate(requests)}
            for future in as_completed(futures):
                try:
                    yield futures[future], future.result()
                except CallFailed as failed:
                    yield futures[future], failed
                except _Fatal as fatal:
                    raise DittoError(str(fatal)) from None
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            self.close()

    def retry_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._retries)

    def check_reachable(self, option: str = "--endpoint", timeout_s: float = 10.0) -> None:
        """Fail fast, in one line, when no endpoint accepts a connection.

        Without this, a typo in a URL costs every retry's backoff before the
        run gives up. Endpoints that are down while others are up only warn:
        the load balancing skips them.
        """
        down: list[str] = []
        for endpoint in self.endpoints:
            try:
                socket.create_connection((endpoint.host, endpoint.port), timeout=timeout_s).close()
            except OSError as exc:
                down.append(f"{option} {endpoint.url}: unreachable ({exc.strerror or type(exc).__name__})")
        if len(down) == len(self.endpoints):
            raise DittoError(down[0] if len(down) == 1 else f"{down[0]} (and every other endpoint)")
        for line in down:
            log.warning("%s; using the other endpoints", line)

    def close(self) -> None:
        """Close the connections of finished worker threads."""
        with self._lock:
            conns, self._open = self._open, []
        for conn in conns:
            conn.close()

    # ---- one call -----------------------------------------------------------------------

    def _call(self, request: ChatRequest) -> ChatResult:
        attempt = 0
        while True:
            endpoint = self._pick_endpoint()
            try:
                return self._attempt(endpoint, request)
            except _Retry as exc:
                attempt += 1
                if attempt > self.retry.max_retries:
                    raise CallFailed(exc.reason, f"{endpoint.url}: gave up after {attempt} attempts: {exc.detail}") from None
                with self._lock:
                    self._retries[exc.reason] += 1
                    wait = self.retry.delay(attempt, exc.retry_after_s, self._rng)
                    if exc.reason == "connection":
                        endpoint.down_until = time.monotonic() + wait
                log.info("retrying in %.2fs after %s from %s: %s", wait, exc.reason, endpoint.url, exc.detail)
                time.sleep(wait)
            finally:
                with self._lock:
                    endpoint.in_flight -= 1

    def _pick_endpoint(self) -> Endpoint:
        with self._lock:
            now = time.monotonic()
            n = len(self.endpoints)
            order = [self.endpoints[(self._next + i) % n] for i in range(n)]
            self._next = (self._next + 1) % n
            endpoint = min(order, key=lambda e: (e.down_until > now, e.in_flight))
            endpoint.in_flight += 1
            return endpoint

    def _body(self, request: ChatRequest) -> bytes:
        body = {
            "model": self.model_name,
            "messages": request.message_dicts(),
            "max_tokens": int(request.max_tokens),
            "temperature": float(request.temperature),
            "top_p": float(request.top_p),
        }
        if request.seed is not None:
            body["seed"] = int(request.seed)
        if request.stop:
            body["stop"] = list(request.stop)
        if request.json_schema is not None:
            level = _FORMAT_LEVELS[self._format_level]
            if level == "json_schema":
                body["response_format"] = {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": request.json_schema, "strict": True},
                }
            elif level == "json_object":
                body["response_format"] = {"type": "json_object"}
        return json.dumps(body, ensure_ascii=False).encode("utf-8")

    def _connection(self, endpoint: Endpoint) -> http.client.HTTPConnection:
        conns = self._local.__dict__.setdefault("conns", {})
        conn = conns.get(id(endpoint))
        if conn is None:
            conn = conns[id(endpoint)] = endpoint.connect(self.timeout_s)
            with self._lock:
                self._open.append(conn)
        return conn

    def _drop_connection(self, endpoint: Endpoint) -> None:
        conn = self._local.__dict__.get("conns", {}).pop(id(endpoint), None)
        if conn is not None:
            conn.close()

    def _attempt(self, endpoint: Endpoint, request: ChatRequest) -> ChatResult:
        format_level = self._format_level
        body = self._body(request)
        try:
            conn = self._connection(endpoint)
            conn.request("POST", endpoint.chat_path, body=body, headers=self._headers)
            response = conn.getresponse()
            status = response.status
            payload = response.read()
            retry_after = parse_retry_after(response.getheader("Retry-After"))
            if response.will_close:
                self._drop_connection(endpoint)
        except (TimeoutError, socket.timeout) as exc:
            self._drop_connection(endpoint)
            raise _Retry("timeout", f"no reply within {self.timeout_s:g}s ({exc})") from None
        except (OSError, http.client.HTTPException) as exc:
            self._drop_connection(endpoint)
            raise _Retry("connection", f"{type(exc).__name__}: {exc}") from None

        if status == 200:
            return _parse_completion(payload, endpoint)
        message = _error_message(payload)
        if status == 429:
            raise _Retry("429", f"HTTP 429: {message}", retry_after)
        if status in RETRYABLE_STATUSES or status >= 500:
            raise _Retry("5xx" if status >= 500 else str(status), f"HTTP {status}: {message}", retry_after)
        if status in FATAL_STATUSES:
            raise _Fatal(f"{endpoint.url}: HTTP {status}: {message}")
        if status == 400 and request.json_schema is not None and format_level < len(_FORMAT_LEVELS) - 1:
            with self._lock:
                if self._format_level == format_level:
                    self._format_level += 1
                    log.warning(
                        "%s rejected response_format %s (%s); using %s from now on",
                        endpoint.url, _FORMAT_LEVELS[format_level], message, _FORMAT_LEVELS[self._format_level],
                    )
            raise _Retry("format_downgrade", f"HTTP 400: {message}")
        raise CallFailed(f"http_{status}", f"{endpoint.url}: HTTP {status}: {message}")


def _parse_completion(payload: bytes, endpoint: Endpoint) -> ChatResult:
    try:
        data = json.loads(payload)
        choice = data["choices"][0]
        text = choice["message"].get("content") or ""
        if not isinstance(text, str):
            raise TypeError("message.content is not a string")
        usage = data.get("usage") or {}
        return ChatResult(
            text=text,
            finish_reason=str(choice.get("finish_reason") or "stop"),
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
        snippet = payload[:80].decode("utf-8", "replace").replace("\n", " ")
        raise _Retry("bad_body", f"unreadable completion ({type(exc).__name__}: {exc}); body starts {snippet!r}") from None


def _error_message(payload: bytes) -> str:
    """The server's error message on one line, short."""
    text = payload.decode("utf-8", "replace")
    try:
        data = json.loads(text)
        err = data.get("error", data) if isinstance(data, dict) else data
        text = err.get("message", str(err)) if isinstance(err, dict) else str(err)
    except ValueError:
        pass
    text = " ".join(text.split())
    return text[:200] or "(empty body)"
