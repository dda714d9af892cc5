"""Counting failed credential attempts, so that guessing subscription codes is slow.

Kept in memory, per process: a guesser spread over replicas gets the limit once per replica,
which still bounds the guessing rate; sharing the count through the store would put a write on
every failure's path for little gain.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict, deque


class FailureLimiter:
    """At most ``limit`` failures per key within ``window`` seconds; then the key waits."""

    def __init__(self, limit: int = 10, window: float = 60.0, max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.max_keys = max_keys
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, key: str, now: float | None = None) -> int | None:
        """Seconds until ``key`` may try again, or None when it may try now."""
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.get(key)
            if failures is None:
                return None
            self._expire(failures, now)
            if len(failures) < self.limit:
                return None
            return max(1, math.ceil(failures[0] + self.window - now))

    def record_failure(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._failures.pop(key, None) or deque()
            self._expire(failures, now)
            failures.append(now)
            self._failures[key] = failures  # most recent last, for eviction below
            while len(self._failures) > self.max_keys:
                self._failures.popitem(last=False)

    def _expire(self, failures: deque[float], now: float) -> None:
        while failures and failures[0] <= now - self.window:
            failures.popleft()
