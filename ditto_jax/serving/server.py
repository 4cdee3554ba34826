"""Running the ASGI app on uvicorn: a bound socket, in the foreground or on a thread.

The socket is bound here, before uvicorn starts, so that `--port 0` can report
the port it got and a busy port is a one-line error. The listen backlog is
2,048 (the standard library server had 5, and reset clients past ~16).
"""
from __future__ import annotations

import socket
import threading

import uvicorn

from ditto_native import DittoError

BACKLOG = 2048


def listen_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to (host, port) and listening; DittoError when it cannot be."""
    if not 0 <= port < 65536:
        raise DittoError(f"--port must be in [0, 65535] (got {port})")
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError as exc:
        raise DittoError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def make_server(app, *, access_log: bool = False) -> uvicorn.Server:
    # log_config=None: keep the CLI's own logging set-up (stderr, quiet unless --verbose).
    config = uvicorn.Config(app, log_config=None, access_log=access_log, timeout_graceful_shutdown=5, backlog=BACKLOG)
    return uvicorn.Server(config)


def serve_forever(app, sock: socket.socket, *, access_log: bool = False) -> None:
    """Serve until SIGINT/SIGTERM (uvicorn handles both and shuts down gracefully)."""
    make_server(app, access_log=access_log).run(sockets=[sock])


class BackgroundServer:
    """The app served on a thread (tests, benchmarks): `with BackgroundServer(app) as url: ...`."""

    def __init__(self, app, host: str = "127.0.0.1", port: int = 0):
        self.sock = listen_socket(host, port)
        self.url = url_of(self.sock)
        self.server = make_server(app)
        self._thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, name="uvicorn", daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        while not self.server.started and self._thread.is_alive():
            threading.Event().wait(0.01)
        return self.url

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self._thread.join(30)
        self.sock.close()
