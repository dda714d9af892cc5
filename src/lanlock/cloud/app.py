"""The cloud's HTTP API: ``POST /iot/x509``, ``GET /healthz``, ``GET /metrics``.

``/metrics`` shares the API's listener, which faces every box (and so the internet): it answers
only ``Authorization: Bearer <LANLOCK_CLOUD_METRICS_TOKEN>`` (compared in constant time), and is off
(404) when no token is set. A bearer token rather than a second listener: one port to expose,
and Prometheus sends the header natively (``authorization.credentials``).
"""

from __future__ import annotations

import asyncio
import hmac
import random
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from lanlock.cloud.limits import TrustedProxies, client_address
from lanlock.cloud.x509 import Answer, X509Service
from lanlock.web_common import BodyTooLarge, read_limited_body

T = TypeVar("T")
MAX_BODY_BYTES = 64 * 1024
ACCEPTED_TYPES = ("application/jose+json", "application/json")
MAX_IN_FLIGHT = 32  # x509 requests one worker takes in at once; more are shed (see Admission)
THREADS = 2  # of those, how many run their blocking work at once (see Admission)
THREADS_ALONE = 1  # the default where the work never waits on a network (see Admission)
BATCH_MOST = 32  # requests answered together at most (see Admission)
SHED_SPREAD = 10  # a shed request is asked to come back within 1..10 s, at random


class Admission:
    """Graceful overload: past ``limit`` requests in progress, answer 503 at once; of those in
    progress, ``threads`` at a time do their blocking work (SQL, signatures) in threads.

    A worker that queues everything answers everyone late (each request waits for all those
    before it); one that sheds answers most in time and tells the rest when to come back. The
    ``Retry-After`` is drawn at random over ``spread`` seconds, so that a herd shed together
    returns spread out instead of as the same wave.

    Few threads, because a worker is one core: more threads than that only fight over the
    interpreter lock and over SQLite's one writer, and every request is late. Measured on SQLite
    (``bench/cloud_x509.py``, 32 in flight, alternating twice): Starlette's default pool of 40
    threads answered the reuse path with a p99 of 570–770 ms and new boxes with 2.8 s; 2 threads
    with 100 ms and 0.45–0.5 s, and about 15 % more new boxes a second. On PostgreSQL 2 to 8
    threads were alike. One event loop per worker: the counter needs no lock.

    Where the work never waits on a network (SQLite and the embedded CA) one thread is the
    default (:data:`THREADS_ALONE`): a second only passes the interpreter lock to and fro at
    every SQLite call. The threads are a pool of the admission's own, reached through the event
    loop's executor hand-off: in process, 32 in flight on SQLite, a new box cost 1.91 ms of CPU
    that way against 2.14 ms through ``anyio.to_thread`` with a limiter of one and 2.30–2.66 ms
    with two (BENCHMARKS.md, fourth session). The work itself on the event loop cost 1.55 ms,
    but then the loop reads one request per turn and never sees a queue to shed.

    With one thread on SQLite the requests are answered ``together``: the thread takes every
    request queued for it (up to :data:`BATCH_MOST`) and answers them with
    :meth:`X509Service.handle_many`, one transaction and one commit for all, and hands the
    answers back to the loop as they are ready: those the first looks decided together, one
    waiting for a lease on its own. In process, the three writes of a reuse answer cost
    243 µs alone and 128 µs eight at a time (BENCHMARKS.md, fifth session). Not on PostgreSQL:
    there a batch would hold its rows' locks for all its requests, and a deadlock between two
    replicas' batches would fail every request of one of them.
    """

    def __init__(
        self,
        limit: int = MAX_IN_FLIGHT,
        threads: int = THREADS,
        spread: int = SHED_SPREAD,
        together: bool = False,
    ) -> None:
        self.limit, self.threads, self.spread = limit, threads, spread
        self.together = together and threads == 1
        self.in_flight = 0
        self._pool: ThreadPoolExecutor | None = None
        self._queued: deque[tuple[bytes, str, asyncio.Future[Answer]]] = deque()
        self._drain_asked = False

    async def answer(self, service: X509Service, body: bytes, source: str) -> Answer:
        """The service's answer to one request: alone in a thread, or with those queued."""
        if not self.together:
            return await self.run(service.handle, body, source)
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Answer] = loop.create_future()
        self._queued.append((body, source, answered))
        self._ask_drain(loop, service)
        return await answered

    async def run(self, work: Callable[..., T], *args: Any) -> T:
        """``work(*args)`` in a thread, at most ``threads`` at once (the pool queues the rest)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads(), work, *args)

    def _threads(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="lanlock-x509")
        return self._pool

    def _ask_drain(self, loop: asyncio.AbstractEventLoop, service: X509Service) -> None:
        # The thread clears the flag before it takes the queue: a request queued after that
        # asks for a drain of its own, so none is left behind (at worst a drain finds none).
        if not self._drain_asked:
            self._drain_asked = True
            self._threads().submit(self._drain, loop, service)

    def _drain(self, loop: asyncio.AbstractEventLoop, service: X509Service) -> None:
        """In the thread: answer the requests queued, at most BATCH_MOST, together."""
        self._drain_asked = False
        batch = [self._queued.popleft() for _ in range(min(len(self._queued), BATCH_MOST))]
        if self._queued:  # more than one batch waits: the next drain is asked now
            loop.call_soon_threadsafe(self._ask_drain, loop, service)
        if not batch:
            return
        waiting = [answered for *_, answered in batch]

        def deliver(ready: dict[int, Answer | Exception]) -> None:
            loop.call_soon_threadsafe(_deliver, waiting, ready)

        try:
            service.handle_many([(body, source) for body, source, _ in batch], deliver)
        except Exception as exc:  # a bug in the batch itself: each request left fails (500)
            deliver(dict.fromkeys(range(len(batch)), exc))

    def full(self) -> bool:
        return self.in_flight >= self.limit

    def retry_after(self) -> int:
        return random.randint(1, self.spread)  # spreading load: no secret in it


def _deliver(waiting: list[asyncio.Future[Answer]], ready: dict[int, Answer | Exception]) -> None:
    for index, answer in ready.items():
        answered = waiting[index]
        if answered.done():  # answered before a bug, or its request cancelled (the server stops)
            continue
        if isinstance(answer, Exception):
            answered.set_exception(answer)
        else:
            answered.set_result(answer)


def create_app(
    service: X509Service,
    metrics_token: str | None = None,
    trusted_proxies: TrustedProxies = (),
    admission: Admission | None = None,
) -> Starlette:
    admission = admission or Admission()

    async def x509(request: Request) -> Response:
        if admission.full():
            service.metrics.shed.inc()
            return JSONResponse(
                {"detail": "the cloud is busy; ask again after Retry-After seconds"},
                status_code=503,
                headers={"Retry-After": str(admission.retry_after())},
            )
        admission.in_flight += 1
        try:
            return await _x509(request)
        finally:
            admission.in_flight -= 1

    async def _x509(request: Request) -> Response:
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type not in ACCEPTED_TYPES:
            return JSONResponse(
                {"detail": "send the signed request as application/jose+json"}, status_code=415
            )
        try:
            body = await read_limited_body(request, MAX_BODY_BYTES)
        except BodyTooLarge:
            service.metrics.count("too_large")
            return JSONResponse(
                {"detail": f"the body is over {MAX_BODY_BYTES // 1024} KiB"}, status_code=413
            )
        except ClientDisconnect:
            return Response(status_code=400)
        peer = request.client.host if request.client else "unknown"
        source = client_address(peer, request.headers.get("x-forwarded-for"), trusted_proxies)
        # The work is blocking (SQL, signatures): off the event loop, onto a few threads.
        answer = await admission.answer(service, body, source)
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)

    async def healthz(_: Request) -> Response:
        try:
            await run_in_threadpool(_ping_store, service)
        except SQLAlchemyError:
            return JSONResponse(
                {"status": "store unavailable"}, status_code=503, headers={"Retry-After": "5"}
            )
        return JSONResponse(
            {"status": "ok", "issuer": service.issuer.name, "zone": service.settings.zone}
        )

    async def metrics(request: Request) -> Response:
        if not metrics_token:
            return JSONResponse(
                {"detail": "metrics are off: set LANLOCK_CLOUD_METRICS_TOKEN to serve them"},
                status_code=404,
            )
        if not _bearer_matches(request.headers.get("authorization", ""), metrics_token):
            return JSONResponse(
                {"detail": "send Authorization: Bearer <the metrics token>"},
                status_code=401,
                headers={"WWW-Authenticate": 'Bearer realm="lanlock metrics"'},
            )
        text = await run_in_threadpool(service.metrics.render)  # it reads the store
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4; charset=utf-8")

    return Starlette(
        routes=[
            Route("/iot/x509", x509, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
        ]
    )


def _bearer_matches(authorization: str, token: str) -> bool:
    scheme, _, given = authorization.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.encode(), token.encode())


def _ping_store(service: X509Service) -> None:
    with service.store.engine.connect() as conn:
        conn.execute(text("SELECT 1"))
