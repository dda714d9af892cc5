"""Threads in tests: joined within a deadline, their exceptions raised in the test that began them.

An exception in a plain ``threading.Thread`` never reaches the test: it is printed, the thread
ends, and the test fails later with an unrelated error (a missing answer, a wait that times out)
or passes. These helpers keep it and raise it, with its own traceback, where the test joins.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


class Threads:
    """Daemon threads whose exceptions are kept, in the order they were raised."""

    def __init__(self) -> None:
        self._threads: list[threading.Thread] = []
        self._failures: list[BaseException] = []

    def start(self, call: Callable[[], Any], name: str | None = None) -> None:
        def run() -> None:
            try:
                call()
            except BaseException as exc:
                self._failures.append(exc)

        thread = threading.Thread(target=run, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def raise_failure(self) -> None:
        """Raise the first exception a thread raised, if one did (the threads go on)."""
        if self._failures:
            raise self._failures[0]

    def join(self, seconds: float) -> None:
        """Wait for every thread, ``seconds`` at most in all; then raise the first exception one
        raised, or fail if one is still running (it is a daemon: it cannot hold the run up)."""
        deadline = time.monotonic() + seconds
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.raise_failure()
        still = [thread.name for thread in self._threads if thread.is_alive()]
        assert not still, f"{len(still)} thread(s) still running after {seconds:g} s: {still}"


def run_in_threads(calls: Sequence[Callable[[], T]], seconds: float) -> list[T]:
    """Each call in its own thread; their results, in the order of ``calls``."""
    results: list[Any] = [None] * len(calls)
    threads = Threads()
    for index, call in enumerate(calls):
        threads.start(_keeping(results, index, call), name=f"call-{index}")
    threads.join(seconds)
    return results


def _keeping(results: list[Any], index: int, call: Callable[[], T]) -> Callable[[], None]:
    def run() -> None:
        results[index] = call()

    return run


@dataclass(frozen=True)
class Span:
    """When one call ran, on the monotonic clock."""

    start: float
    end: float


def run_together(calls: Sequence[Callable[[], T]], seconds: float) -> tuple[list[T], list[Span]]:
    """Each call in its own thread, all released at one instant; their results, and when each
    one ran (for :func:`assert_overlapping`)."""
    barrier = threading.Barrier(len(calls))
    spans: list[Any] = [None] * len(calls)

    def released(index: int, call: Callable[[], T]) -> Callable[[], T]:
        def run() -> T:
            barrier.wait(seconds)  # a thread that never arrives breaks it: no one waits forever
            start = time.monotonic()
            result = call()
            spans[index] = Span(start, time.monotonic())
            return result

        return run

    results = run_in_threads([released(i, call) for i, call in enumerate(calls)], seconds)
    return results, spans


def most_at_once(spans: Sequence[Span]) -> int:
    """The largest number of spans running at one instant."""
    # At equal times an end (-1) sorts before a start (+1): spans that only touch never overlap.
    events = sorted([(span.start, 1) for span in spans] + [(span.end, -1) for span in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def assert_overlapping(spans: Sequence[Span]) -> None:
    """Fail unless at least half of the calls were running at one instant.

    A race test proves nothing if its requests went one after another (a client that serialises
    them, a barrier that does not hold): then no two are ever in flight at once.
    """
    peak = most_at_once(spans)
    assert peak >= max(2, len(spans) // 2), (
        f"at most {peak} of {len(spans)} calls ran at once: "
        f"{[(round(s.start, 3), round(s.end, 3)) for s in spans]}"
    )
