"""One worker process: a blocking UDP loop on its main thread, TCP and the store on two others.

Why a plain blocking ``recvfrom``/``sendto`` loop and not asyncio: an asyncio datagram protocol
adds an event-loop turn (one more system call), a callback and a transport call to every packet,
and answered less than half as many queries a second as this loop with the same answer code
(``bench/dns_loops.py``; BENCHMARKS.md). The UDP socket is the worker's
alone (the kernel spreads packets over the workers with ``SO_REUSEPORT``), so nothing else needs
the main thread. TCP (rare, and slow clients must not block anybody) gets a ``selectors`` loop on
a thread; the store's snapshot (:mod:`lanlock.dns.challenges`) gets a thread of its own.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import multiprocessing
import os
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import dns.rcode

from lanlock.dns.answer import AccountUris, ChallengeValues, Responder, error_reply
from lanlock.dns.challenges import ChallengeBoard
from lanlock.dns.fastpath import FastPath
from lanlock.dns.ratelimit import ResponseRateLimiter
from lanlock.dns.zone import Zone, ZoneSettings
from lanlock.journal import time_prefix

log = logging.getLogger(__name__)

Answer = Callable[[bytes], bytes | None]

# Larger than any sane query over UDP; a bigger datagram arrives cut and gets FORMERR.
UDP_RECEIVE_SIZE = 4096
_TCP_OUTBOX_LIMIT = 1 << 20  # a client that does not read its answers is dropped past this
_SWEEP_INTERVAL = 0.5  # seconds between checks for idle TCP connections and a dead parent
_ERROR_LOG_INTERVAL = 10.0  # at most one traceback per worker in this many seconds


@dataclass(frozen=True)
class TcpLimits:
    """How much of DNS over TCP one connection, and one host, may hold (per worker).

    The defaults are far beyond what a resolver does: it asks over TCP after a truncated answer,
    on one connection to a server (RFC 7766 recommends no more), kept idle up to a minute and
    reused for a few hundred queries at most (Unbound's defaults: 60 s and 200). One that meets
    a limit all the same asks again on a new connection, as RFC 7766 has clients do when a
    connection closes before all its answers.
    """

    idle_timeout: float = 10.0  # seconds without an answer to send
    lifetime: float = 120.0  # seconds from the connection's start, however busy it is
    max_queries: int = 1000  # messages read on one connection; it closes after the last answer
    max_connections: int = 100  # open at once
    max_per_source: int = 10  # open at once from one host (see source_host)


@dataclass(frozen=True)
class WorkerSettings:
    zone: ZoneSettings
    store_url: str
    tcp: TcpLimits = TcpLimits()
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
    answers = Answers(zone, board, board)
    tcp_service = TcpService(tcp, answers.tcp, settings.tcp)
    threading.Thread(target=tcp_service.run, name="tcp", daemon=True).start()
    limiter = ResponseRateLimiter(settings.rrl_rate) if settings.rrl_rate > 0 else None
    log.info("worker %d (pid %d) answering", index, os.getpid())
    serve_udp(udp, answers, limiter)


def configure_logging() -> None:
    # The worker's PID stays in the line: the journal knows only the PID of the unit's parent.
    logging.basicConfig(
        level=logging.INFO,
        format=time_prefix() + "lanlock-dns[%(process)d] %(levelname)s %(message)s",
    )


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    # Raised on the main thread, out of the blocking recvfrom; the other threads are daemons.
    raise SystemExit(0)


class Answers:
    """The fast path first, the slow path for what it leaves; SERVFAIL if either breaks."""

    def __init__(
        self, zone: Zone, board: ChallengeValues, accounts: AccountUris | None = None
    ) -> None:
        self.fast = FastPath(zone).answer
        self.slow = Responder(zone, board, accounts).respond
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


def source_host(address: str) -> bytes:
    """The host a TCP client is, as a key: its IPv4 address, or its IPv6 address's /64.

    Per host, not per /24 or /56 as response-rate limiting counts forged UDP sources: a TCP
    client has completed a handshake, so its address is its own, and a wider key would let one
    host lock its neighbours out (say, the cloud's visibility check, from the same hosting
    /24). An IPv6 host can take any address of its /64 at will: the /64 is the one host.
    """
    ip = ipaddress.ip_address(address.partition("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # an IPv4 client of a dual-stack socket
    return ip.packed if ip.version == 4 else ip.packed[:8]


class _Connection:
    __slots__ = ("deadline", "expires", "inbox", "mask", "outbox", "queries_left", "sock", "source")

    def __init__(self, sock: socket.socket, source: bytes, limits: TcpLimits) -> None:
        now = time.monotonic()
        self.sock = sock
        self.source = source
        self.expires = now + limits.lifetime
        self.deadline = min(now + limits.idle_timeout, self.expires)
        self.queries_left = limits.max_queries
        self.inbox = bytearray()
        self.outbox = bytearray()
        self.mask = selectors.EVENT_READ


class TcpService:
    """DNS over TCP (RFC 7766): several queries per connection, answered in order.

    A connection is closed after ``idle_timeout`` seconds without an answer to send (bytes that
    trickle in and messages that get no answer do not count, so a client cannot hold a connection
    by sending slowly), after ``lifetime`` seconds however busy, once the answers to its
    ``max_queries`` messages are sent, when its client stops reading answers, and at once when
    ``max_connections`` are already open or its host already has ``max_per_source``. So one host
    holds at most ``max_per_source`` of the ``max_connections``, and none of them for long.
    """

    def __init__(self, listener: socket.socket, answer: Answer, limits: TcpLimits) -> None:
        self._listener = listener
        self._answer = answer
        self._limits = limits
        self._selector = selectors.DefaultSelector()
        self._connections: dict[socket.socket, _Connection] = {}
        self._per_source: Counter[bytes] = Counter()
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
                sock, peer = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # out of file descriptors, or the client gave up already
                return
            source = source_host(peer[0])
            if not self._has_room_for(source):
                sock.close()
                continue
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._connections[sock] = _Connection(sock, source, self._limits)
            self._per_source[source] += 1
            self._selector.register(sock, selectors.EVENT_READ)

    def _has_room_for(self, source: bytes) -> bool:
        return (
            len(self._connections) < self._limits.max_connections
            and self._per_source[source] < self._limits.max_per_source
        )

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
        while len(inbox) >= 2 and connection.queries_left:
            size = int.from_bytes(inbox[:2], "big")
            if len(inbox) < 2 + size:
                break
            query = bytes(inbox[2 : 2 + size])
            del inbox[: 2 + size]
            connection.queries_left -= 1
            reply = self._answer(query)
            if reply is not None:
                connection.outbox += len(reply).to_bytes(2, "big") + reply
                idle_end = time.monotonic() + self._limits.idle_timeout
                connection.deadline = min(idle_end, connection.expires)
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
        if not connection.queries_left and not connection.outbox:
            self._close(connection)  # its budget is spent and the last answer sent
            return
        # A spent connection reads nothing more: what its client still sends is not answered.
        wanted = (selectors.EVENT_READ if connection.queries_left else 0) | (
            selectors.EVENT_WRITE if connection.outbox else 0
        )
        if wanted != connection.mask:
            self._selector.modify(connection.sock, wanted)
            connection.mask = wanted

    def _close(self, connection: _Connection) -> None:
        if self._connections.pop(connection.sock, None) is not None:
            self._per_source[connection.source] -= 1
            if not self._per_source[connection.source]:
                del self._per_source[connection.source]  # forget hosts that hold nothing
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
