"""`ditto-jax serve`: an OpenAI-compatible chat server over the batched Engine.

Any OpenAI client (and role-play chat front ends) can talk to a Ditto model:

- `POST /v1/chat/completions` with messages, temperature, top_p, max_tokens
  (or max_completion_tokens), stop, seed, n, response_format (text,
  json_object, or json_schema through the engine's constrained decoding) and
  stream (server-sent events); vLLM's extra top_k and repetition_penalty too.
- `GET /v1/models`; `GET /health` (also counts batches and the requests they held).
- Bad requests get a 4xx with an OpenAI-style error body naming the field.

Batching: HTTP threads parse and check a request, then queue it. One worker
thread owns the engine: it takes whatever is queued (up to --max-batch
requests, waiting --batch-wait-ms after the first for company) and runs it as
one `Engine.generate` call, so concurrent clients share decode steps. A
request that the engine rejects is re-run alone, so it cannot fail its batch.

Streaming sends the role at once and the text when the batch is done, split
at token boundaries; the engine does not report tokens while it decodes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import queue
import signal
import sys
import threading
import time
import uuid
from concurrent.futures import Future
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ditto_native import DittoError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_N = 16
_ROLES = frozenset({"system", "user", "assistant", "developer", "tool"})


class ApiError(Exception):
    """An error that becomes an HTTP status and an OpenAI-style error body."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code

    def body(self) -> dict:
        kind = "invalid_request_error" if self.status < 500 else "server_error"
        return {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}


# ---- request parsing -------------------------------------------------------------------------


def _number(body: dict, name: str, default: float, *, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ApiError(400, f"'{name}' must be a number", param=name)
    if value < low or value > high or (low_open and value == low):
        interval = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise ApiError(400, f"'{name}' must be in {interval} (got {value})", param=name)
    return float(value)


def _integer(body: dict, name: str, default: int | None, *, low: int, high: int) -> int | None:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise ApiError(400, f"'{name}' must be an integer", param=name)
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be in [{low}, {high}] (got {value})", param=name)
    return value


def _messages(body: dict) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "'messages' must be a non-empty list", param="messages")
    out = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise ApiError(400, f"'{where}' must be an object", param=where)
        role = message.get("role")
        if role not in _ROLES:
            raise ApiError(400, f"'{where}.role' must be one of {', '.join(sorted(_ROLES))}", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, list):  # content parts: only text ones can be used
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise ApiError(400, f"'{where}.content[{j}]' must be a text part; this server reads text only", param=f"{where}.content")
                texts.append(part["text"])
            content = "".join(texts)
        elif content is None and role == "assistant":
            content = ""
        if not isinstance(content, str):
            raise ApiError(400, f"'{where}.content' must be a string or a list of text parts", param=f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _response_format(body: dict) -> dict | None:
    """The JSON schema to constrain decoding to, or None for free text."""
    fmt = body.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise ApiError(400, "'response_format' must be an object", param="response_format")
    kind = fmt.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        if not isinstance(spec, dict) or not isinstance(spec.get("schema"), dict):
            raise ApiError(400, "'response_format.json_schema.schema' must be a JSON schema object", param="response_format.json_schema.schema")
        return spec["schema"]
    raise ApiError(400, "'response_format.type' must be text, json_object or json_schema", param="response_format.type")


def parse_chat_request(body: Any, served_name: str, *, default_max_tokens: int, max_context: int):
    """(GenerationRequest, stream, include_usage) from a chat-completions body; ApiError when it is bad."""
    from ditto_jax.generation import GenerationRequest
    from ditto_jax.generation.constraints import grammar_for
    from llguidance import LLMatcher

    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object")
    model = body.get("model")
    if model is not None and model != served_name:
        raise ApiError(404, f"model '{model}' is not served here; this server has '{served_name}'", param="model", code="model_not_found")
    for unsupported in ("tools", "functions", "logprobs", "top_logprobs", "logit_bias"):
        if body.get(unsupported):
            raise ApiError(400, f"'{unsupported}' is not supported by this server", param=unsupported)
    stop = body.get("stop")
    if stop is None:
        stop = []
    elif isinstance(stop, str):
        stop = [stop]
    if not isinstance(stop, list) or any(not isinstance(s, str) or not s for s in stop):
        raise ApiError(400, "'stop' must be a non-empty string or a list of them", param="stop")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", param="stream")
    options = body.get("stream_options") or {}
    if not isinstance(options, dict):
        raise ApiError(400, "'stream_options' must be an object", param="stream_options")
    # Bounded by the context length: the engine allocates cache slots for every token asked for.
    max_tokens = _integer(body, "max_completion_tokens", None, low=1, high=max_context)
    max_tokens = _integer(body, "max_tokens", max_tokens or min(default_max_tokens, max_context), low=1, high=max_context)
    schema = _response_format(body)
    if schema is not None:
        # Reject a schema llguidance cannot compile here, before it reaches a batch.
        try:
            problem = LLMatcher.validate_grammar(grammar_for(json_schema=schema))
        except DittoError as exc:
            problem = str(exc)
        if problem:
            raise ApiError(400, f"response_format: unusable JSON schema: {' '.join(problem.split())[:200]}", param="response_format")
    request = GenerationRequest(
        messages=_messages(body),
        max_new_tokens=max_tokens,
        temperature=_number(body, "temperature", 1.0, low=0.0, high=2.0),
        top_p=_number(body, "top_p", 1.0, low=0.0, high=1.0, low_open=True),
        top_k=max(0, _integer(body, "top_k", 0, low=-1, high=1 << 20)),  # vLLM's -1 and 0 both mean off
        repetition_penalty=_number(body, "repetition_penalty", 1.0, low=0.0, high=10.0, low_open=True),
        stop=tuple(stop),
        seed=_integer(body, "seed", None, low=-(1 << 63), high=(1 << 64) - 1),
        json_schema=schema,
        n=_integer(body, "n", 1, low=1, high=MAX_N),
    )
    if request.seed is not None and request.seed < 0:  # OpenAI allows negative seeds; the engine wants [0, 2**64)
        request = dataclasses.replace(request, seed=request.seed % (1 << 64))
    try:
        request.check("request")
    except DittoError as exc:
        raise ApiError(400, str(exc)) from None
    return request, stream, bool(options.get("include_usage"))


# ---- batching ----------------------------------------------------------------------------------


class Batcher:
    """Queues requests from many threads and runs them through one engine, in batches."""

    def __init__(self, engine, *, max_batch: int, wait_s: float):
        self.engine = engine
        self.max_batch = max_batch
        self.wait_s = wait_s
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="engine", daemon=True)
        self._thread.start()
        self.batches = 0  # batches run so far (read by tests and logs)
        self.batched_requests = 0

    def submit(self, request) -> Future:
        """A Future of the request's `n` completions."""
        future: Future = Future()
        self._queue.put((request, future))
        return future

    def _loop(self) -> None:
        while True:
            batch = [self._queue.get()]
            deadline = time.monotonic() + self.wait_s
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            self._run(batch)

    def _run(self, batch) -> None:
        requests = [r for r, _ in batch]
        try:
            completions = self.engine.generate(requests)
        except DittoError as exc:
            if len(batch) > 1:
                for item in batch:  # find the bad request: the others still get their replies
                    self._run([item])
                return
            batch[0][1].set_exception(ApiError(400, str(exc)))
            return
        except Exception as exc:  # an engine bug must not hang every waiting client
            log.exception("generation failed")
            for _, future in batch:
                future.set_exception(ApiError(500, f"generation failed: {type(exc).__name__}: {exc}"))
            return
        self.batches += 1
        self.batched_requests += len(batch)
        start = 0
        for request, future in batch:
            future.set_result(completions[start : start + request.n])
            start += request.n


# ---- HTTP --------------------------------------------------------------------------------------


class ChatServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, *, batcher: Batcher, tokenizer, served_name: str, default_max_tokens: int):
        super().__init__(address, _Handler)
        self.batcher = batcher
        self.max_context = int(batcher.engine.cfg.max_position_embeddings)
        self.tokenizer = tokenizer
        self.served_name = served_name
        self.default_max_tokens = default_max_tokens
        self.created = int(time.time())


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: clients reuse one connection for many calls
    server: ChatServer

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base class's name
        log.info("%s %s", self.address_string(), format % args)

    # -- routes --

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if path == "/v1/models":
            self._json(200, {"object": "list", "data": [self._model_card()]})
        elif path == f"/v1/models/{self.server.served_name}":
            self._json(200, self._model_card())
        elif path == "/health":
            batcher = self.server.batcher
            self._json(200, {"status": "ok", "batches": batcher.batches, "requests": batcher.batched_requests})
        elif path == "/v1/chat/completions":
            self._error(ApiError(405, "use POST for /v1/chat/completions"))
        else:
            self._error(ApiError(404, f"no route {path or '/'}; try /v1/chat/completions or /v1/models"))

    def do_POST(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        try:
            body = self._read_json()  # read it even for a wrong path, so the connection stays in step
            if path != "/v1/chat/completions":
                raise ApiError(405 if path in ("/v1/models", "/health") else 404, f"no POST route {path or '/'}")
            request, stream, include_usage = parse_chat_request(
                body, self.server.served_name, default_max_tokens=self.server.default_max_tokens, max_context=self.server.max_context
            )
        except ApiError as exc:
            self._error(exc)
            return
        future = self.server.batcher.submit(request)
        if stream:
            self._stream(request, future, include_usage)
        else:
            try:
                completions = future.result()
            except ApiError as exc:
                self._error(exc)
                return
            self._json(200, self._completion_body(completions))

    def do_PUT(self) -> None:
        self._wrong_method()

    do_DELETE = do_PATCH = do_PUT

    def _wrong_method(self) -> None:
        self._drain()
        self._error(ApiError(405, f"method {self.command} is not allowed"))

    # -- bodies --

    def _model_card(self) -> dict:
        return {"id": self.server.served_name, "object": "model", "created": self.server.created, "owned_by": "ditto"}

    def _completion_body(self, completions) -> dict:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.server.served_name,
            "choices": [
                {"index": i, "message": {"role": "assistant", "content": c.text}, "finish_reason": c.finish_reason, "logprobs": None}
                for i, c in enumerate(completions)
            ],
            "usage": _usage(completions),
        }

    def _stream(self, request, future: Future, include_usage: bool) -> None:
        ident, created = f"chatcmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(choices: list, usage: dict | None = None) -> dict:
            body = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": self.server.served_name, "choices": choices}
            if include_usage:
                body["usage"] = usage
            return body

        self.close_connection = True  # the stream's end is the connection's end
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            for i in range(request.n):
                self._event(chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]))
            try:
                completions = future.result()
            except ApiError as exc:
                self._event(exc.body())
                self._raw(b"data: [DONE]\n\n")
                return
            for i, completion in enumerate(completions):
                for piece in _text_pieces(self.server.tokenizer, completion):
                    self._event(chunk([{"index": i, "delta": {"content": piece}, "finish_reason": None}]))
                self._event(chunk([{"index": i, "delta": {}, "finish_reason": completion.finish_reason}]))
            if include_usage:
                self._event(chunk([], _usage(completions)))
            self._raw(b"data: [DONE]\n\n")
        except (BrokenPipeError, ConnectionResetError):
            log.info("client left during a stream")

    # -- plumbing --

    def _read_json(self) -> Any:
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise ApiError(411, "send the body with a Content-Length, not chunked")
        if length is None:
            raise ApiError(411, "a Content-Length header is required")
        try:
            size = int(length)
        except ValueError:
            self.close_connection = True
            raise ApiError(400, "bad Content-Length header") from None
        if size > MAX_BODY_BYTES:
            self.close_connection = True
            raise ApiError(413, f"request body over {MAX_BODY_BYTES} bytes")
        raw = self.rfile.read(size)
        try:
            return json.loads(raw)
        except (UnicodeDecodeError, ValueError) as exc:
            raise ApiError(400, f"the body is not valid JSON: {exc}") from None

    def _drain(self) -> None:
        try:
            size = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            size = 0
        if 0 < size <= MAX_BODY_BYTES:
            self.rfile.read(size)
        elif size:
            self.close_connection = True

    def _json(self, status: int, body: dict) -> None:
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            log.info("client left before its reply")

    def _error(self, exc: ApiError) -> None:
        if exc.status >= 500:
            log.error("%s", exc.message)
        self._json(exc.status, exc.body())

    def _event(self, body: dict) -> None:
        self._raw(b"data: " + json.dumps(body, ensure_ascii=False).encode("utf-8") + b"\n\n")

    def _raw(self, data: bytes) -> None:
        self.wfile.write(data)
        self.wfile.flush()


def _usage(completions) -> dict:
    prompt = completions[0].prompt_tokens if completions else 0
    completion = sum(c.completion_tokens for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def _text_pieces(tokenizer, completion) -> list[str]:
    """The reply's text cut at token boundaries, as a token-by-token stream would send it.

    Decoding growing prefixes keeps multi-byte characters whole: a piece is
    emitted once the decoded text has grown without a replacement character.
    """
    text = completion.text
    pieces, sent = [], 0
    ids = list(completion.token_ids)
    for end in range(1, len(ids) + 1):
        if sent >= len(text):
            break
        prefix = tokenizer.decode(ids[:end], skip_special_tokens=True)
        if prefix.endswith("\ufffd") or len(prefix) <= sent:
            continue
        upto = min(len(prefix), len(text))
        if text[sent:upto]:
            pieces.append(text[sent:upto])
            sent = upto
    if sent < len(text):
        pieces.append(text[sent:])
    return pieces


# ---- command -------------------------------------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "serve", help="OpenAI-compatible chat server",
        description=(
            "Serve a model over an OpenAI-compatible HTTP API: POST /v1/chat/completions (messages, temperature, top_p, "
            "max_tokens, stop, seed, n, response_format json_schema/json_object, stream) and GET /v1/models. "
            "Concurrent requests are batched into one generation. Prints the listening URL on stderr."
        ),
    )
    p.add_argument("--model", required=True, help="model reference: smollm2, a Hugging Face directory or a .gguf file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one (default 8000)")
    p.add_argument("--served-model-name", help="model id clients use (default: the --model reference)")
    p.add_argument("--max-batch", type=int, default=16, help="most requests per generation batch (default 16)")
    p.add_argument("--batch-wait-ms", type=float, default=10.0, help="after a request arrives, wait this long for others to batch with it (default 10)")
    p.add_argument("--default-max-tokens", type=int, default=512, help="reply limit when a request sets none (default 512)")
    p.set_defaults(func=run_serve)


def run_serve(args: argparse.Namespace) -> int:
    from ditto_jax.generation import Engine
    from ditto_jax.loader import load_model

    if args.max_batch < 1 or args.default_max_tokens < 1 or args.batch_wait_ms < 0:
        raise DittoError("--max-batch and --default-max-tokens must be >= 1, --batch-wait-ms >= 0")
    if not 0 <= args.port < 65536:
        raise DittoError(f"--port must be in [0, 65535] (got {args.port})")
    print(f"ditto-jax serve: loading {args.model} ...", file=sys.stderr, flush=True)
    model, bundle = load_model(args.model)
    engine = Engine(model, bundle, max_batch=args.max_batch)
    batcher = Batcher(engine, max_batch=args.max_batch, wait_s=args.batch_wait_ms / 1000)
    name = args.served_model_name or args.model
    try:
        server = ChatServer(
            (args.host, args.port), batcher=batcher, tokenizer=bundle, served_name=name, default_max_tokens=args.default_max_tokens
        )
    except OSError as exc:
        raise DittoError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    host, port = server.server_address[:2]
    print(f"ditto-jax serve: listening on http://{host}:{port}/v1 (model {name})", file=sys.stderr, flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        print("ditto-jax serve: stopping", file=sys.stderr, flush=True)
    finally:
        server.server_close()
    return 0
