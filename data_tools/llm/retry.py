"""When to retry an HTTP call, and how long to wait first."""
from __future__ import annotations

import dataclasses
import email.utils
import random
import time

# Statuses worth another try: the server is busy, overloaded or briefly broken.
RETRYABLE_STATUSES = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
MAX_RETRY_AFTER_S = 600.0  # honour a server's Retry-After, but never wait longer than this


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with full jitter; `Retry-After` sets a floor.

    Attempt a (1-based) waits uniformly in [0, min(cap, base * 2**(a-1))]:
    full jitter spreads out clients that failed together, so they do not all
    come back at the same moment.
    """

    max_retries: int = 8
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0

    def delay(self, attempt: int, retry_after_s: float | None = None, rng: random.Random | None = None) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * 2 ** (attempt - 1))
        wait = (rng or random).uniform(0.0, ceiling)
        if retry_after_s is not None:
            wait = max(wait, min(retry_after_s, MAX_RETRY_AFTER_S))
        return wait


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
