"""The playground's HTTP routes, mounted next to the OpenAI API by `ditto-jax serve --ui`.

    GET  /                     the page (static/index.html)
    GET  /login                the key form, when the server has an API key
    GET  /static/...           the page's scripts and style, from the package
    GET  /ui/api/config        served models, languages, whether votes are kept
    GET  /ui/api/characters    ?q=&lang=&limit= -> matching characters with their system message
    POST /ui/api/votes         one blind preference vote -> appended to --votes FILE
    POST /ui/login, /ui/logout the session cookie (see ditto_jax/serving/auth.py)

The page itself chats through the OpenAI API (/v1/chat/completions with
stream), like any other client.
"""
from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Sequence
from pathlib import Path

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from ditto_jax.serving import auth
from ditto_jax.playground.characters import CharacterIndex
from ditto_jax.playground.votes import VoteError, VoteLog, vote_record

STATIC_DIR = Path(__file__).resolve().parent / "static"
MAX_VOTE_BYTES = 16 * 1024
# The page runs only its own files: even injected markup could not run a script.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


@dataclasses.dataclass(frozen=True)
class Playground:
    characters: CharacterIndex
    models: Sequence[str]  # served model names, in --model order
    votes: VoteLog | None  # None: votes are not kept (no --votes)
    api_key: str | None  # None: no login

    def routes(self) -> list[BaseRoute]:
        routes: list[BaseRoute] = [
            Route("/", self.page, methods=["GET", "HEAD"]),
            Route("/login", self.login_page, methods=["GET", "HEAD"]),
            Route("/ui/api/config", self.config, methods=["GET"]),
            Route("/ui/api/characters", self.search, methods=["GET"]),
            Route("/ui/api/votes", self.vote, methods=["POST"]),
            Route("/ui/logout", auth.logout, methods=["POST"]),
            Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
        ]
        if self.api_key:
            routes.append(Route("/ui/login", functools.partial(auth.login, key=self.api_key), methods=["POST"]))
        return routes

    async def page(self, request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers=PAGE_HEADERS)

    async def login_page(self, request: Request) -> Response:
        if not self.api_key:
            return RedirectResponse("/", status_code=303)
        return FileResponse(STATIC_DIR / "login.html", headers=PAGE_HEADERS)

    async def config(self, request: Request) -> Response:
        return JSONResponse({
            "models": list(self.models), "languages": self.characters.languages,
            "characters": len(self.characters), "votes": self.votes is not None, "login": bool(self.api_key),
        })

    async def search(self, request: Request) -> Response:
        params = request.query_params
        try:
            limit = int(params.get("limit", "20"))
        except ValueError:
            return _error(400, "'limit' must be an integer", "limit")
        found = self.characters.search(params.get("q", ""), lang=params.get("lang") or None, limit=limit)
        return JSONResponse({"data": found})

    async def vote(self, request: Request) -> Response:
        if self.votes is None:
            return _error(409, "votes are not kept: start serve with --votes FILE", None)
        raw = await request.body()
        if len(raw) > MAX_VOTE_BYTES:
            return _error(413, f"a vote is at most {MAX_VOTE_BYTES} bytes", None)
        try:
            body = json.loads(raw)
        except ValueError:
            return _error(400, "the body is not valid JSON", None)
        try:
            record = vote_record(body, self.models)
        except VoteError as exc:
            return _error(400, str(exc), exc.field)
        await run_in_threadpool(self.votes.append, record)  # fsync blocks; keep the event loop free
        return JSONResponse({"record": record}, status_code=201)


def _error(status: int, message: str, param: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": None}}, status_code=status)
