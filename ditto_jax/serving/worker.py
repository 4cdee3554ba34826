"""One thread per served model that drives its Engine's scheduler.

HTTP handlers call `submit` (any thread); the worker thread runs
`Engine.step` while there is work and sleeps on the engine's queue otherwise.
When the engine was idle, it first waits `batch_wait_s` so that clients that
arrive together share the first decode step; after that, new requests join the
running batch at the next step. An engine bug ends the requests it held with an
error instead of hanging their clients.
"""
from __future__ import annotations

import logging
import threading
import time

from ditto_jax.generation.engine import Engine, Listener, Ticket

log = logging.getLogger(__name__)


class EngineWorker:
    def __init__(self, engine: Engine, *, batch_wait_s: float = 0.0, name: str = "engine"):
        self.engine = engine
        self.batch_wait_s = batch_wait_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, request, listener: Listener | None = None) -> Ticket:
        """Queue a request; raises DittoError when the engine refuses it (bad prompt or constraint)."""
        return self.engine.submit(request, listener)

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        with self.engine._arrived:  # wake the loop if it sleeps on the queue
            self.engine._arrived.notify_all()
        self._thread.join(timeout)

    def _loop(self) -> None:
        engine = self.engine
        while not self._stop.is_set():
            if not engine.wait_for_work(timeout=0.5):
                continue
            if self.batch_wait_s and not engine.counts()["running"]:
                time.sleep(self.batch_wait_s)
            try:
                engine.step()
            except Exception as exc:  # noqa: BLE001 - an engine bug must not hang every waiting client
                log.exception("generation step failed")
                engine.fail_all(exc)
