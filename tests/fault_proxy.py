"""A fault-injecting HTTP proxy for testing LLM clients on loopback.

It sits between a client and a real OpenAI-compatible server. Each POST takes
the next fault from a script, in arrival order; once the script is used up,
requests pass through untouched. Faults:

- "500", "503", "400", "401", ...: that status with an error body, nothing forwarded;
- "429:S": 429 with `Retry-After: S` (seconds, or an HTTP date), nothing forwarded;
- "drop": the connection is closed without any reply;
- "slow:S": forwarded after S seconds;
- "badjson": 200 with a body that is not JSON, nothing forwarded;
- "ok": forwarded (a placeholder to space faults out).

`delay_s` slows every reply down. `garble(body) -> bool` marks requests whose (forwarded) reply gets its
message content replaced by text that is not JSON: for exercising a
client's handling of unparsable model output.

Every POST is logged as a `Seen` (arrival time, fault, parsed body), so
tests can count attempts and check waits.
"""
from __future__ import annotations

import dataclasses
import http.client
import json
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

GARBLED_CONTENT = "Sorry, here are my questions: who, what, when"


@dataclasses.dataclass
class Seen:
    at: float  # time.monotonic() on arrival
    fault: str
    body: Any
    headers: dict


class FaultProxy:
    """`with FaultProxy(upstream, ["500", "429:1", "drop"]) as proxy: ... proxy.url ...`"""

    def __init__(
        self, upstream: str, faults: list[str] | None = None, *, garble: Callable[[Any], bool] | None = None, delay_s: float = 0.0
    ):
        parts = urllib.parse.urlsplit(upstream)
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.upstream_base = parts.path.rstrip("/")  # e.g. /v1
        self.faults = list(faults or [])
        self.garble = garble
        self.delay_s = delay_s  # added before every reply: an endpoint that is simply slower
        self.seen: list[Seen] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}{self.upstream_base}"

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def faults_used(self) -> list[str]:
        with self._lock:
            return [s.fault for s in self.seen]

    def _next_fault(self, body: Any, headers: dict) -> str:
        with self._lock:
            fault = self.faults.pop(0) if self.faults else "pass"
            self.seen.append(Seen(time.monotonic(), fault, body, headers))
            return fault

    def _forward(self, path: str, raw: bytes, headers: dict) -> tuple[int, dict, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=600)
        try:
            conn.request("POST", path, body=raw, headers=headers)
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    def _handler_class(self):
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                fault = proxy._next_fault(body, dict(self.headers.items()))
                time.sleep(proxy.delay_s)
                kind, _, arg = fault.partition(":")
                if kind == "429":
                    self._reply(429, {"error": {"message": "injected rate limit"}}, {"Retry-After": arg} if arg else {})
                elif kind.isdigit():
                    self._reply(int(kind), {"error": {"message": f"injected {kind}"}})
                elif kind == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                elif kind == "badjson":
                    self._send(200, b'{"choices": [{"message": {"content": "trunc', {"Content-Type": "application/json"})
                else:
                    if kind == "slow":
                        time.sleep(float(arg))
                    headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "authorization")}
                    status, _, payload = proxy._forward(self.path, raw, headers)
                    if status == 200 and proxy.garble is not None and body is not None and proxy.garble(body):
                        data = json.loads(payload)
                        for choice in data["choices"]:
                            choice["message"]["content"] = GARBLED_CONTENT
                        payload = json.dumps(data).encode()
                    self._send(status, payload, {"Content-Type": "application/json"})

            def _reply(self, status: int, body: dict, headers: dict | None = None) -> None:
                self._send(status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})})

            def _send(self, status: int, payload: bytes, headers: dict) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        return Handler
