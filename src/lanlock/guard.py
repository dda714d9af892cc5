"""Password guessing, limited: what the box's actions and the console's login check first.

Each password compared costs an scrypt run (16 MiB, tens of milliseconds), so guessing is
limited three ways before any comparison runs:

* at most ``SCRYPT_AT_ONCE`` comparisons at once in the whole process (two threads of their
  own, so memory stays bounded however many requests arrive); a request that cannot start one
  within ``QUEUE_SECONDS`` is refused;
* per source host (an IPv4 address; an IPv6 /64, all of which one host may use): the first
  ``FREE_FAILURES`` wrong passwords cost nothing more, each one after that locks the source
  out for twice as long as the one before (1 s, 2 s, 4 s, … up to 15 minutes); a right
  password clears the count, and a source quiet for an hour is forgotten.
  At most ``MAX_SOURCES`` sources are tracked (the least recently failed is dropped first);
* globally: ``GLOBAL_FAILURES`` wrong passwords within ``GLOBAL_WINDOW`` seconds lock everyone
  out until the oldest of them is that old, against guessing spread over many addresses.

One source can fail at most about 14 times in 10 minutes (4 free, then lockouts of 1 + 2 + … +
256 s), so the global budget of 100 takes at least 8 sources failing as fast as they are let:
one attacker never locks the admin out, many do, for at most 10 minutes at a time.

A refusal is a 429 with ``Retry-After``, and runs no comparison. The source is the client's
address as the server sees it: behind a proxy every client shares the proxy's address.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from lanlock import names
from lanlock.web_common import Refused

SCRYPT_AT_ONCE = 2
QUEUE_SECONDS = 2.0
FREE_FAILURES = 4
FIRST_LOCKOUT = 1.0
LONGEST_LOCKOUT = 15 * 60.0
FORGET_AFTER = 3600.0
MAX_SOURCES = 4096
GLOBAL_FAILURES = 100
GLOBAL_WINDOW = 600.0

# Process-wide and loop-independent: a restarted box (a new event loop, a new guard) still
# compares on the same two threads, whose memory allocator keeps at most their two buffers.
_COMPARING = ThreadPoolExecutor(max_workers=SCRYPT_AT_ONCE, thread_name_prefix="password")


class Throttled(Refused):
    """Too many wrong passwords (or comparisons at once): 429, retry after ``retry_after`` s."""

    def __init__(self, wait: float) -> None:
        self.retry_after = max(1, math.ceil(wait))
        super().__init__(
            429,
            "Too many attempts",
            "Too many wrong passwords were tried, so nothing was checked nor changed. Try again "
            f"in {self.retry_after} seconds.",
            headers={"Retry-After": str(self.retry_after)},
        )


@dataclass
class _Failures:
    count: int = 0
    last: float = 0.0
    locked_until: float = 0.0


class PasswordGuard:
    """One per app: the failures it has seen, and its queue for the comparing threads."""

    def __init__(self) -> None:
        self._slots = asyncio.Semaphore(SCRYPT_AT_ONCE)
        self._sources: OrderedDict[str, _Failures] = OrderedDict()
        self._recent: deque[float] = deque(maxlen=GLOBAL_FAILURES)

    async def check(self, source: str, matches: Callable[[], bool]) -> bool:
        """``matches()`` (a password comparison) for ``source``, or :class:`Throttled`."""
        source = names.host_of(source)  # an IPv6 host cannot step through its /64
        self._refuse_if_locked(source)
        try:
            async with asyncio.timeout(QUEUE_SECONDS):
                await self._slots.acquire()
        except TimeoutError:
            raise Throttled(QUEUE_SECONDS) from None
        try:
            # Checked again: the failures of the requests it queued behind count too.
            self._refuse_if_locked(source)
            right = await asyncio.get_running_loop().run_in_executor(_COMPARING, matches)
        finally:
            self._slots.release()
        if right:
            self._sources.pop(source, None)
        else:
            self._failed(source)
        return right

    def _refuse_if_locked(self, source: str) -> None:
        now = time.monotonic()
        waits = [0.0]
        found = self._sources.get(source)
        if found is not None:
            waits.append(found.locked_until - now)
        if len(self._recent) == GLOBAL_FAILURES:
            waits.append(self._recent[0] + GLOBAL_WINDOW - now)
        if max(waits) > 0:
            raise Throttled(max(waits))

    def _failed(self, source: str) -> None:
        now = time.monotonic()
        self._recent.append(now)
        found = self._sources.pop(source, None)
        if found is None or now - found.last > FORGET_AFTER:
            found = _Failures()
        found.count += 1
        found.last = now
        beyond = found.count - FREE_FAILURES
        if beyond > 0:
            lockout = FIRST_LOCKOUT * 2 ** min(beyond - 1, 20)
            found.locked_until = now + min(LONGEST_LOCKOUT, lockout)
        self._sources[source] = found  # the most recently failed last
        while len(self._sources) > MAX_SOURCES:
            self._sources.popitem(last=False)
