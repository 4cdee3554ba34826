"""Runs batches of LLM calls through the cache and a backend, and keeps the score.

Every finished call is stored before anything else happens, so a killed run
loses only the calls in flight. A call whose key is already stored is never
sent again.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence

from tqdm import tqdm

from data_tools.llm.cache import CallCache, call_key
from data_tools.llm.types import Backend, CallFailed, ChatRequest, ChatResult

# Test-only hook: the process SIGKILLs itself right after storing this many new calls,
# so crash-and-resume tests hit a known point instead of guessing at timing.
KILL_AFTER_CALLS_ENV = "DITTO_TEST_KILL_AFTER_CALLS"


@dataclasses.dataclass
class CallStats:
    calls: int = 0  # calls made (and stored) by this run
    cache_hits: int = 0
    failures: Counter = dataclasses.field(default_factory=Counter)  # reason -> calls that produced no reply
    prompt_tokens: int = 0
    completion_tokens: int = 0


class CallRunner:
    """`run(requests)` returns one ChatResult or CallFailed per request, in order.

    >>> runner = CallRunner(backend, CallCache("calls.sqlite"))  # doctest: +SKIP
    >>> results = runner.run([ChatRequest.chat([{"role": "user", "content": "Hi"}], max_tokens=16)])  # doctest: +SKIP
    """

    def __init__(self, backend: Backend, cache: CallCache, *, progress: bool = False, desc: str = "simulate"):
        self.backend = backend
        self.cache = cache
        self.stats = CallStats()
        self._started = time.monotonic()
        self._bar = tqdm(total=0, desc=desc, unit="call", file=sys.stderr, disable=not progress, dynamic_ncols=True)
        kill_after = os.environ.get(KILL_AFTER_CALLS_ENV)
        self._kill_after = int(kill_after) if kill_after else None

    def plan(self, n: int) -> None:
        """Announce n more calls, so the bar's ETA covers them."""
        self._bar.total += n
        self._bar.refresh()

    def run(self, requests: Sequence[ChatRequest]) -> list[ChatResult | CallFailed]:
        model = self.backend.model_name
        keys = [call_key(model, r) for r in requests]
        results: list[ChatResult | CallFailed | None] = [None] * len(requests)
        misses: list[int] = []
        first_of: dict[str, int] = {}
        for i, key in enumerate(keys):
            stored = self.cache.get(key)
            if stored is not None:
                results[i] = stored
                self.stats.cache_hits += 1
                self._bar.update(1)
            elif key in first_of:
                continue  # the same call twice in one batch is made once
            else:
                first_of[key] = i
                misses.append(i)
        if misses:
            for j, result in self.backend.complete([requests[i] for i in misses]):
                i = misses[j]
                if isinstance(result, ChatResult):
                    self.cache.put(keys[i], model, requests[i], result)
                    self.stats.calls += 1
                    self.stats.prompt_tokens += result.prompt_tokens
                    self.stats.completion_tokens += result.completion_tokens
                    if self._kill_after is not None and self.stats.calls >= self._kill_after:
                        os.kill(os.getpid(), signal.SIGKILL)
                else:
                    self.stats.failures[result.reason] += 1
                results[i] = result
                self._bar.update(1)
                self._show_rates()
        for i, key in enumerate(keys):
            if results[i] is None:
                results[i] = results[first_of[key]]
                self._bar.update(1)
        return results  # type: ignore[return-value]

    def _show_rates(self) -> None:
        elapsed = max(time.monotonic() - self._started, 1e-9)
        self._bar.set_postfix_str(
            f"{self.stats.completion_tokens / elapsed:.1f} tok/s, hits {self.stats.cache_hits}, "
            f"retries {sum(self.backend.retry_counts().values())}",
            refresh=False,
        )

    def close(self) -> None:
        self._bar.close()
