"""One worker process: a blocking UDP loop on its main thread, TCP and the store on two others.

Why a plain blocking ``recvfrom``/``sendto`` loop and not asyncio: an asyncio datagram protocol
adds an event-loop turn (one more system call), a callback and a transport call to every packet,
and answered less than half as many queries a second as this loop with the same answer code
(``bench/dns_loops.py``; BENCHMARKS.md). The UDP socket is the worker's
alone (the kernel spreads packets over the workers with ``SO_REUSEPORT``), so nothing else needs
the main thread. TCP (rare, and slow clients must not block anybody) gets a ``selectors`` loop on
a thread; the challenge snapshot (:mod:`lanlock.dns.challenges`) gets a thread of its own.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import dns.rcode

from lanlock.dns.answer import ChallengeValues, Responder, error_reply
from lanlock.dns.challenges import ChallengeBoard
from lanlock.dns.fastpath import FastPath
from lanlock.dns.ratelimit import ResponseRateLimiter
from lanlock.dns.zone import Zone, ZoneSettings

log = logging.getLogger(__name__)

Answer = Callable[[bytes], bytes | None]

# Larger than any sane query over UDP; a bigger datagram arrives cut and gets FORMERR.
UDP_RECEIVE_SIZE = 4096
_TCP_OUTBOX_LIMIT = 1 << 20  # a client that does not read its answers is dropped past this
_SWEEP_INTERVAL = 0.5  # seconds between checks for idle TCP connections and a dead parent
_ERROR_LOG_INTERVAL = 10.0  # at most one traceback per worker in this many seconds


@dataclass(frozen=True)
class WorkerSettings:
    zone: ZoneSettings
    store_url: str
    tcp_idle_timeout: float = 10.0
    tcp_max_connections: int = 100
    rrl_rate: float = 0.0  # answers a second per source prefix; 0: no limit
    challenge_refresh: float = 0.25


def run_worker(
    index: int, settings: WorkerSettings, udp: socket.socket, tcp: socket.socket
) -> None:
    """The body of worker process ``index`` (the target of its ``multiprocessing.Process``)."""
    # A forked worker inherits the parent's wake-up socket and handlers: its signals are its own.
    signal.set_wakeup_fd(-1)
    # Ctrl-C reaches the whole process group; the parent decides when workers stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    configure_logging()
    zone = Zone(settings.zone)
    board = ChallengeBoard(settings.store_url, refresh=settings.challenge_refresh)
    board.start()
    answers = Answers(zone, board)
    tcp_service = TcpService(
        tcp, answers.tcp, settings.tcp_idle_timeout, settings.tcp_max_connections
    )
    threading.Thread(target=tcp_service.run, name="tcp", daemon=True).start()
    limiter = ResponseRateLimiter(settings.rrl_rate) if settings.rrl_rate > 0 else None
    log.info("worker %d (pid %d) answering", index, os.getpid())
    serve_udp(udp, answers, limiter)


def configure_logging() -> None:
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s lanlock-dns[%(process)d] %(levelname)s %(message)s",
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # Raised on the main thread, out of the blocking recvfrom; the other threads are daemons.
    raise SystemExit(0)


class Answers:
    """The fast path first, the slow path for what it leaves; SERVFAIL if either breaks."""

    def __init__(self, zone: Zone, board: ChallengeValues) -> None:
        self.fast = FastPath(zone).answer
        self.slow = Responder(zone, board).respond
        self._errors = ThrottledErrors()

    def tcp(self, query: bytes) -> bytes | None:
        try:
            return self.fast(query) or self.slow(query, tcp=True)
        except Exception:  # a bug must cost one answer, never the worker
            return self.failed(query)

    def failed(self, query: bytes) -> bytes | None:
        self._errors.report()
        return error_reply(query, dns.rcode.SERVFAIL)


class ThrottledErrors:
    """Logs an unexpected error with its traceback, at most once per interval, counting the rest."""

    def __init__(self) -> None:
        self._next = 0.0
        self._skipped = 0

    def report(self) -> None:
        now = time.monotonic()
        if now < self._next:
            self._skipped += 1
            return
        log.exception("unexpected error answering a query (%d more not logged)", self._skipped)
        self._next = now + _ERROR_LOG_INTERVAL
        self._skipped = 0


def serve_udp(sock: socket.socket, answers: Answers, limiter: ResponseRateLimiter | None) -> None:
    """Answer datagrams until the process is told to stop."""
    # Bound once and called inline rather than through Answers: each call saved per packet is
    # measurable at this rate (about 0.6 µs of some 10 µs here).
    recvfrom, sendto, fast, slow = sock.recvfrom, sock.sendto, answers.fast, answers.slow
    while True:
        try:
            query, peer = recvfrom(UDP_RECEIVE_SIZE)
        except OSError:  # Windows reports an earlier reply's ICMP "port unreachable" here
            if sock.fileno() < 0:
                return
            continue
        try:
            reply = fast(query) or slow(query, tcp=False)
        except Exception:  # a bug must cost one answer, never the worker
            reply = answers.failed(query)
        if reply is not None and limiter is not None:
            reply = limiter.admit(reply, peer[0])
        if reply is not None:
            # try/except rather than contextlib.suppress: no context manager per packet.
            try:  # noqa: SIM105
                sendto(reply, peer)
            except OSError:  # an unreachable or invalid source: nothing to do about it
                pass


class _Connection:
    __slots__ = ("deadline", "inbox", "mask", "outbox", "sock")

    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self.sock = sock
        self.deadline = deadline
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.mask = selectors.EVENT_READ


class TcpService:
    """DNS over TCP (RFC 7766): several queries per connection, answered in order.

    A connection is closed after ``idle_timeout`` seconds without an answer to send (bytes that
    trickle in and messages that get no answer do not count, so a client cannot hold a connection
    by sending slowly), when its client stops reading answers, and at once when
    ``max_connections`` are already open.
    """

    def __init__(
        self, listener: socket.socket, answer: Answer, idle_timeout: float, max_connections: int
    ) -> None:
        self._listener = listener
        self._answer = answer
        self._idle_timeout = idle_timeout
        self._max_connections = max_connections
        self._selector = selectors.DefaultSelector()
        self._connections: dict[socket.socket, _Connection] = {}
        self._errors = ThrottledErrors()

    def run(self) -> None:
        self._listener.setblocking(False)
        self._selector.register(self._listener, selectors.EVENT_READ)
        next_sweep = 0.0
        while True:
            try:
                for key, mask in self._selector.select(timeout=_SWEEP_INTERVAL):
                    self._on_event(key.fileobj, mask)  # type: ignore[arg-type]
                if time.monotonic() >= next_sweep:
                    self._sweep()
                    next_sweep = time.monotonic() + _SWEEP_INTERVAL
            except Exception:
                self._errors.report()

    def _on_event(self, sock: socket.socket, mask: int) -> None:
        if sock is self._listener:
            self._accept()
            return
        connection = self._connections.get(sock)
        if connection is None:
            return
        if mask & selectors.EVENT_READ:
            self._read(connection)
        if mask & selectors.EVENT_WRITE and connection.sock in self._connections:
            self._flush(connection)

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, or the client gave up already
                return
            if len(self._connections) >= self._max_connections:
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            connection = _Connection(sock, time.monotonic() + self._idle_timeout)
            self._connections[sock] = connection
            self._selector.register(sock, selectors.EVENT_READ)

    def _read(self, connection: _Connection) -> None:
        try:
            data = connection.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(connection)
            return
        inbox = connection.inbox
        inbox += data
        while len(inbox) >= 2:
            size = int.from_bytes(inbox[:2], "big")
            if len(inbox) < 2 + size:
                break
            query = bytes(inbox[2 : 2 + size])
            del inbox[: 2 + size]
            reply = self._answer(query)
            if reply is not None:
                connection.outbox += len(reply).to_bytes(2, "big") + reply
                connection.deadline = time.monotonic() + self._idle_timeout
        if len(connection.outbox) > _TCP_OUTBOX_LIMIT:
            self._close(connection)
            return
        self._flush(connection)

    def _flush(self, connection: _Connection) -> None:
        if connection.outbox:
            try:
                sent = connection.sock.send(connection.outbox)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError:
                self._close(connection)
                return
            del connection.outbox[:sent]
        wanted = selectors.EVENT_READ | (selectors.EVENT_WRITE if connection.outbox else 0)
        if wanted != connection.mask:
            self._selector.modify(connection.sock, wanted)
            connection.mask = wanted

    def _close(self, connection: _Connection) -> None:
        self._connections.pop(connection.sock, None)
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(connection.sock)
        connection.sock.close()

    def _sweep(self) -> None:
        now = time.monotonic()
        for connection in [c for c in self._connections.values() if c.deadline <= now]:
            self._close(connection)
        parent = multiprocessing.parent_process()
        if parent is not None and not parent.is_alive():
            # The supervisor is gone (killed outright): do not live on as an orphan.
            os._exit(0)
