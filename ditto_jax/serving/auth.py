"""One API key for the whole server: the OpenAI API and the playground page.

The key comes from `--api-key` or, better (a flag shows in `ps`), from the
environment variable DITTO_SERVE_API_KEY. It is never logged. A request is let
in when it carries either

- `Authorization: Bearer <key>` (OpenAI clients, scripts), or
- the session cookie the page gets by posting the key once to `/ui/login`.
  The cookie holds an HMAC of the key, not the key; it is HttpOnly (page
  scripts never see it) and SameSite=Strict (other sites cannot make the
  browser send it), and a cookie-authenticated POST must also be
  `application/json`, which a cross-site form cannot send without CORS.

Without a key nothing is guarded; that is only safe on 127.0.0.1, the default bind.
Unauthenticated page loads are redirected to `/login`; everything else gets a
401 with an OpenAI-style error body.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from http.cookies import SimpleCookie

from ditto_native import DittoError
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

KEY_ENV = "DITTO_SERVE_API_KEY"
COOKIE = "ditto_session"
# Reachable without a key: the login page and what it loads.
PUBLIC_PATHS = frozenset({"/login", "/ui/login", "/static/login.js", "/static/app.css"})
_PAGES = frozenset({"/", "/index.html"})
_LOGIN_FAILURE_DELAY_S = 0.5  # slows guessing; a real key is long anyway


def api_key_from(flag: str | None) -> str | None:
    """The server's key: the flag, else the environment, else None (no guard)."""
    key = flag if flag is not None else os.environ.get(KEY_ENV)
    if key and not (key.isascii() and key.isprintable() and key.strip() == key):
        # It travels in an HTTP header, which carries no other characters reliably.
        source = "--api-key" if flag is not None else KEY_ENV
        raise DittoError(f"{source}: the API key must be printable ASCII without surrounding spaces")
    return key or None


def session_token(key: str) -> str:
    return hmac.new(key.encode("utf-8"), b"ditto-jax serve: playground session", hashlib.sha256).hexdigest()


def _unauthorized(message: str) -> JSONResponse:
    body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyGuard:
    """ASGI middleware: refuse any HTTP request without the key (see the module doc).

    Pure ASGI rather than BaseHTTPMiddleware, so streamed responses pass through untouched.
    """

    def __init__(self, app, key: str):
        self.app = app
        self._key = key.encode("utf-8")
        self._token = session_token(key).encode("ascii")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            return await self.app(scope, receive, send)
        verdict = self._check(Request(scope))
        if verdict is None:
            return await self.app(scope, receive, send)
        response: Response
        if scope["method"] == "GET" and scope["path"] in _PAGES:
            response = RedirectResponse("/login", status_code=303)
        else:
            response = _unauthorized(verdict)
        await response(scope, receive, send)

    def _check(self, request: Request) -> str | None:
        """None when the request may pass, else why not."""
        header = request.headers.get("authorization", "")
        if header:
            scheme, _, given = header.partition(" ")
            if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("utf-8"), self._key):
                return None
            return "invalid API key in the Authorization header"
        cookie = _cookie(request.headers.get("cookie", ""))
        if cookie is not None and hmac.compare_digest(cookie.encode("utf-8", "replace"), self._token):
            if request.method in ("GET", "HEAD") or request.headers.get("content-type", "").startswith("application/json"):
                return None
            return "a request authenticated by the session cookie must send application/json"
        return "this server needs an API key: send 'Authorization: Bearer <key>' or sign in at /login"


def _cookie(header: str) -> str | None:
    jar = SimpleCookie()
    try:
        jar.load(header)
    except Exception:  # a malformed Cookie header is just no session
        return None
    morsel = jar.get(COOKIE)
    return morsel.value if morsel else None


async def login(request: Request, key: str) -> Response:
    """POST /ui/login {"key": ...}: sets the session cookie when the key is right."""
    try:
        body = json.loads(await request.body())
    except ValueError:
        body = None
    given = body.get("key") if isinstance(body, dict) else None
    if not isinstance(given, str) or not hmac.compare_digest(given.encode("utf-8"), key.encode("utf-8")):
        await asyncio.sleep(_LOGIN_FAILURE_DELAY_S)
        return _unauthorized("wrong API key")
    response = Response(status_code=204)
    response.set_cookie(COOKIE, session_token(key), httponly=True, samesite="strict", path="/",
                        secure=request.url.scheme == "https")
    return response


async def logout(request: Request) -> Response:
    response = Response(status_code=204)
    response.delete_cookie(COOKIE, path="/")
    return response
