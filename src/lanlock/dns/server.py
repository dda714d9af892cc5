"""``lanlock dns serve``: sockets, worker processes, signals.

The parent binds every socket, starts one worker process per socket pair, and then only
supervises: it restarts a worker that dies (a bounded number of times), and on SIGTERM or SIGINT
stops them all and exits. The parent keeps its copies of the sockets open, so a restarted worker
takes over the very socket of the one that died, with the datagrams queued in it.

Several workers share one port through ``SO_REUSEPORT``, which on Linux spreads datagrams and
connections over the sockets by the client's address and port. Other systems get one worker:
Windows has no ``SO_REUSEPORT``, and on macOS and the BSDs it does not spread the load (the last
socket bound gets the datagrams). One Python process answers from one core, so the workers are
how the server uses every core.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from types import FrameType

from lanlock import defaults
from lanlock.dns.challenges import check_schema
from lanlock.dns.worker import WorkerSettings, configure_logging, run_worker
from lanlock.dns.zone import Zone

log = logging.getLogger(__name__)

MAX_RESTARTS = 10  # worker deaths tolerated within RESTART_WINDOW; past that the server exits
RESTART_WINDOW = 60.0
STOP_GRACE = 5.0  # seconds a worker gets to exit after SIGTERM before it is killed
_UDP_BUFFER = 4 << 20  # absorbs bursts; the kernel caps it at net.core.rmem_max
_TCP_BACKLOG = 128
SPREADS_OVER_SOCKETS = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


class PortInUse(OSError):
    """The address and port cannot be bound; the message says which."""


@dataclass(frozen=True)
class ServerSettings:
    worker: WorkerSettings
    host: str = defaults.LOOPBACK
    port: int = defaults.DNS_PORT
    workers: int = 0  # 0: one per core


def worker_count(requested: int) -> int:
    """``requested``, or one per usable core; always 1 where the kernel cannot spread the load."""
    if not SPREADS_OVER_SOCKETS:
        return 1
    if requested > 0:
        return requested
    if hasattr(os, "process_cpu_count"):  # Python 3.13+: honours the CPU affinity mask
        return os.process_cpu_count() or 1
    return len(os.sched_getaffinity(0))


def serve(settings: ServerSettings) -> int:
    """Run until SIGTERM or SIGINT; the exit status (0, or 1 when workers keep dying)."""
    configure_logging()
    zone = Zone(settings.worker.zone)  # bad settings fail here, before anything is bound
    check_schema(settings.worker.store_url)
    count = worker_count(settings.workers)
    warn_if_one_host_can_hold_all_tcp(settings.worker)
    sockets = bind_sockets(settings.host, settings.port, count)
    port = sockets[0][0].getsockname()[1]
    log.info(
        "authoritative for %s on %s port %d (UDP and TCP), %d worker%s, SOA serial %d",
        zone.name,
        settings.host,
        port,
        count,
        "" if count == 1 else "s",
        zone.serial,
    )
    try:
        return Supervisor(settings.worker, sockets).run()
    finally:
        for udp, tcp in sockets:
            udp.close()
            tcp.close()


def warn_if_one_host_can_hold_all_tcp(settings: WorkerSettings) -> None:
    tcp = settings.tcp
    if tcp.max_per_source >= tcp.max_connections:
        log.warning(
            "--tcp-max-per-source %d is not below --tcp-max-connections %d: "
            "one host can hold every TCP connection",
            tcp.max_per_source,
            tcp.max_connections,
        )


def bind_sockets(host: str, port: int, count: int) -> list[tuple[socket.socket, socket.socket]]:
    """``count`` pairs of (UDP, listening TCP) sockets on one address and port."""
    opened: list[socket.socket] = []
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)[0][0]
        shared = count > 1
        if shared:
            _check_free(family, host, port)
        for _ in range(count):
            opened.append(_bound(family, socket.SOCK_DGRAM, host, port, shared))
            port = opened[-1].getsockname()[1]  # a port of 0 becomes the one the system chose
            opened.append(_bound(family, socket.SOCK_STREAM, host, port, shared))
            opened[-1].listen(_TCP_BACKLOG)
    except OSError as exc:
        for sock in opened:
            sock.close()
        raise PortInUse(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from exc
    return list(zip(opened[::2], opened[1::2], strict=True))


def _check_free(family: int, host: str, port: int) -> None:
    """Fail if anything listens already: with SO_REUSEPORT, a second server of the same user
    would otherwise quietly share the port with the first, each getting half of the queries."""
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with _bound(family, kind, host, port, shared=False):
            pass


def _bound(family: int, kind: int, host: str, port: int, shared: bool) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        if shared:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if kind == socket.SOCK_STREAM and os.name == "posix":
            # Restart at once despite connections in TIME_WAIT (on Windows this option would
            # let another program take the port: it is left off there).
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if kind == socket.SOCK_DGRAM:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _UDP_BUFFER)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Supervisor:
    """Starts the workers, restarts one that dies, stops them all on SIGTERM or SIGINT."""

    def __init__(
        self, settings: WorkerSettings, sockets: list[tuple[socket.socket, socket.socket]]
    ) -> None:
        self._settings = settings
        self._sockets = sockets
        # fork starts a worker in milliseconds and shares the parent's memory; elsewhere spawn,
        # which the sockets survive through multiprocessing's own socket passing.
        method = "fork" if sys.platform == "linux" else "spawn"
        self._context = multiprocessing.get_context(method)
        self._workers: list[BaseProcess] = []
        self._deaths: deque[float] = deque()
        self._stopping = False

    def run(self) -> int:
        wake_reader, wake_writer = socket.socketpair()
        wake_reader.setblocking(False)
        wake_writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_writer.fileno())
        previous = {sig: signal.signal(sig, self._on_signal) for sig in _stop_signals()}
        try:
            self._workers = [self._start(index) for index in range(len(self._sockets))]
            return self._supervise(wake_reader)
        finally:
            self._stop_workers()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            signal.set_wakeup_fd(previous_fd)
            wake_reader.close()
            wake_writer.close()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _start(self, index: int) -> BaseProcess:
        udp, tcp = self._sockets[index]
        process = self._context.Process(
            target=run_worker,
            args=(index, self._settings, udp, tcp),
            name=f"lanlock-dns-worker-{index}",
        )
        process.start()
        return process

    def _supervise(self, wake_reader: socket.socket) -> int:
        while not self._stopping:
            # The timeout covers Windows, where a signal does not write to the wake-up socket.
            multiprocessing.connection.wait(
                [wake_reader, *(worker.sentinel for worker in self._workers)], timeout=1.0
            )
            with contextlib.suppress(OSError):
                while wake_reader.recv(512):
                    pass
            if self._stopping:
                break
            for index, worker in enumerate(self._workers):
                if worker.is_alive():
                    continue
                if not self._may_restart():
                    log.error(
                        "workers died %d times within %.0f s; stopping",
                        len(self._deaths),
                        RESTART_WINDOW,
                    )
                    return 1
                log.warning(
                    "worker %d (pid %s) exited with status %s; starting it again",
                    index,
                    worker.pid,
                    worker.exitcode,
                )
                self._workers[index] = self._start(index)
        log.info("stopping")
        return 0

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self._deaths.append(now)
        while self._deaths and now - self._deaths[0] > RESTART_WINDOW:
            self._deaths.popleft()
        return len(self._deaths) <= MAX_RESTARTS

    def _stop_workers(self) -> None:
        for worker in self._workers:
            if worker.is_alive():
                worker.terminate()  # SIGTERM: the worker leaves its loop and exits
        deadline = time.monotonic() + STOP_GRACE
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.warning(
                    "worker pid %s did not stop within %.0f s; killing it", worker.pid, STOP_GRACE
                )
                worker.kill()
                worker.join()


def _stop_signals() -> tuple[signal.Signals, ...]:
    return (signal.SIGTERM, signal.SIGINT)
