"""The ASGI application (Starlette): OpenAI-compatible routes over one or more served models.

Routes:
- `POST /v1/chat/completions`: a reply, or with `stream: true` server-sent
  events carrying each piece of text as the engine decodes it;
- `GET /v1/models`, `GET /v1/models/{name}`;
- `GET /health`: status plus the engines' counters.

Several models can be served at once (`--model A --model B`), each under its
own name with its own engine thread; a request picks one with `model` (the
first when it names none). More routes, such as a browser page, are added with
`create_app(models, routes=[...])`; they see the models as
`request.app.state.models` (name -> `ServedModel`).

A client that disconnects cancels its request: the engine frees its rows at
the next step. Each handler watches the connection for `http.disconnect`
while it waits.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from typing import Any, Sequence

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from ditto_jax.serving import api
from ditto_jax.serving.api import ApiError
from ditto_jax.serving.worker import EngineWorker
from ditto_native import DittoError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ServedModel:
    """A model as the server offers it: its name, engine thread and limits."""

    name: str
    worker: EngineWorker
    default_max_tokens: int = 512
    created: int = dataclasses.field(default_factory=lambda: int(time.time()))

    @property
    def engine(self):
        return self.worker.engine

    @property
    def max_context(self) -> int:
        return int(self.engine.cfg.max_position_embeddings)

    def card(self) -> dict:
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "ditto"}


def create_app(models: Sequence[ServedModel], *, routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The server's ASGI app. `routes` are mounted before the API's own (e.g. a playground page)."""
    if not models:
        raise DittoError("serve: no models")
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise DittoError(f"serve: served model names must differ (got {', '.join(names)})")
    app = Starlette(
        routes=[
            *routes,
            Route("/v1/chat/completions", chat_completions, methods=["GET", "POST", "PUT", "PATCH", "DELETE"]),
            Route("/v1/models", list_models, methods=["GET"]),
            Route("/v1/models/{name:path}", get_model, methods=["GET"]),
            Route("/health", health, methods=["GET"]),
        ],
        exception_handlers={HTTPException: _http_error, ApiError: _api_error},
    )
    app.state.models = {m.name: m for m in models}
    return app


# ---- routes ------------------------------------------------------------------------------------


async def list_models(request: Request) -> Response:
    return _json(200, {"object": "list", "data": [m.card() for m in request.app.state.models.values()]})


async def get_model(request: Request) -> Response:
    model = request.app.state.models.get(request.path_params["name"])
    if model is None:
        raise ApiError(404, f"model '{request.path_params['name']}' is not served here", param="model", code="model_not_found")
    return _json(200, model.card())


async def health(request: Request) -> Response:
    counts = {name: m.engine.counts() for name, m in request.app.state.models.items()}
    return _json(200, {
        "status": "ok",
        "batches": sum(c["runs"] for c in counts.values()),  # busy periods of the engines
        "requests": sum(c["finished_requests"] for c in counts.values()),
        "models": counts,
    })


async def chat_completions(request: Request) -> Response:
    if request.method != "POST":
        await _drain(request)
        raise ApiError(405, "use POST for /v1/chat/completions")
    body = api.check_body(await _read_json(request))
    models: dict[str, ServedModel] = request.app.state.models
    model = models[api.pick_model(body, list(models))]
    generation, stream, include_usage = api.parse_chat_request(
        body, default_max_tokens=model.default_max_tokens, max_context=model.max_context
    )
    loop = asyncio.get_running_loop()
    events: asyncio.Queue = asyncio.Queue()

    def listener(index: int, text: str, completion) -> None:  # on the engine's thread
        loop.call_soon_threadsafe(events.put_nowait, (index, text, completion))

    try:
        # Encoding the prompt and compiling a grammar take milliseconds: off the event loop.
        ticket = await run_in_threadpool(model.worker.submit, generation, listener)
    except DittoError as exc:
        raise ApiError(400, str(exc)) from None
    if stream:
        return EventStream(model.name, ticket, events, include_usage)
    watcher = asyncio.ensure_future(_disconnected(request.receive))
    try:
        completions = await _collect(ticket, events, watcher)
    finally:
        watcher.cancel()
    if completions is None:
        return Response(status_code=499)  # the client is gone; nothing reads this
    return _json(200, api.completion_body(model.name, completions))


async def _collect(ticket, events: asyncio.Queue, watcher: asyncio.Future):
    """The ticket's completions, or None when the client left first (the ticket is then cancelled)."""
    done = [None] * ticket.request.n
    while any(c is None for c in done):
        getter = asyncio.ensure_future(events.get())
        finished, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if getter not in finished:
            getter.cancel()
            ticket.cancel()
            return None
        index, _, completion = getter.result()
        if index < 0:
            raise ApiError(500, "generation failed: the engine stopped this request")
        if completion is not None:
            done[index] = completion
    return done


async def _disconnected(receive) -> None:
    """Return once the client has closed the connection."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class EventStream:
    """Server-sent events of one streamed completion; an ASGI response.

    The role chunk goes out at once, then each piece of text as the engine
    decodes it, a finish_reason chunk per choice, the usage chunk when asked
    for, and `[DONE]`. If the client disconnects, the ticket is cancelled.
    """

    def __init__(self, model: str, ticket, events: asyncio.Queue, include_usage: bool):
        self.ticket = ticket
        self.events = events
        self.writer = api.ChunkWriter(model, include_usage)

    async def __call__(self, scope, receive, send) -> None:
        await send({
            "type": "http.response.start", "status": 200,
            "headers": [(b"content-type", b"text/event-stream; charset=utf-8"), (b"cache-control", b"no-cache")],
        })
        watcher = asyncio.ensure_future(_disconnected(receive))
        try:
            await self._events(send, watcher)
        except OSError:  # the connection broke while writing
            log.info("client left during a stream; its rows are freed")
        finally:
            watcher.cancel()
            if not self.ticket.done:  # left early, or the server is shutting down
                self.ticket.cancel()

    async def _events(self, send, watcher: asyncio.Future) -> None:
        async def event(body: dict | str) -> None:
            data = body if isinstance(body, str) else json.dumps(body, ensure_ascii=False)
            await send({"type": "http.response.body", "body": f"data: {data}\n\n".encode(), "more_body": True})

        n = self.ticket.request.n
        for i in range(n):
            await event(self.writer.role(i))
        done: list = [None] * n
        while any(c is None for c in done):
            getter = asyncio.ensure_future(self.events.get())
            finished, _ = await asyncio.wait({getter, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if getter not in finished:
                getter.cancel()
                self.ticket.cancel()
                log.info("client left during a stream; its rows are freed")
                return
            index, text, completion = getter.result()
            if index < 0:
                await event(ApiError(500, "generation failed: the engine stopped this request").body())
                break
            if text:
                await event(self.writer.text(index, text))
            if completion is not None:
                done[index] = completion
                await event(self.writer.finish(index, completion.finish_reason))
        else:
            if self.writer.include_usage:
                await event(self.writer.usage(done))
        await event("[DONE]")
        await send({"type": "http.response.body", "body": b"", "more_body": False})


# ---- plumbing ------------------------------------------------------------------------------------


def _json(status: int, body: dict) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), status_code=status, media_type="application/json")


async def _api_error(request: Request, exc: ApiError) -> Response:
    if exc.status >= 500:
        log.error("%s", exc.message)
    return _json(exc.status, exc.body())


async def _http_error(request: Request, exc: HTTPException) -> Response:
    path = request.url.path.rstrip("/") or "/"
    if exc.status_code == 404:
        if request.method == "GET":
            message = f"no route {path}; try /v1/chat/completions or /v1/models"
        else:
            message = f"no {request.method} route {path}"
    elif exc.status_code == 405:
        message = f"method {request.method} is not allowed on {path}"
    else:
        message = str(exc.detail)
    return await _api_error(request, ApiError(exc.status_code, message))


async def _read_json(request: Request) -> Any:
    """The body as JSON: 411 without a length, 413 past MAX_BODY_BYTES, 400 when it does not parse."""
    length = request.headers.get("content-length")
    chunked = "chunked" in request.headers.get("transfer-encoding", "").lower()
    if length is None and not chunked:
        raise ApiError(411, "a Content-Length header is required")
    if length is not None:
        try:
            size = int(length)
        except ValueError:
            raise ApiError(400, "bad Content-Length header") from None
        if size > api.MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {api.MAX_BODY_BYTES} bytes")
    raw = bytearray()
    async for part in request.stream():
        raw += part
        if len(raw) > api.MAX_BODY_BYTES:
            raise ApiError(413, f"request body over {api.MAX_BODY_BYTES} bytes")
    try:
        return json.loads(bytes(raw))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not valid JSON: {exc}") from None


async def _drain(request: Request) -> None:
    async for _ in request.stream():
        pass
