"""Worker processes under one parent: started, restarted when one dies, stopped on a signal.

The DNS server and the cloud use every core the same way: the parent binds the sockets, starts
one worker process per slot, and then only supervises. It restarts a worker that dies (a bounded
number of times, then gives up with status 1) and on SIGTERM or SIGINT stops them all and
exits. The parent keeps its copies of the sockets open, so a restarted worker takes over the
very socket of the one that died, with what is queued in it.
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
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any

log = logging.getLogger(__name__)

# Several sockets on one port share the load only where the kernel spreads connections and
# datagrams over them (Linux's SO_REUSEPORT, by the client's address and port); on macOS and the
# BSDs the last socket bound gets everything.
SPREADS_OVER_SOCKETS = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")
UDP_BUFFER = 4 << 20  # absorbs bursts; the kernel caps it at net.core.rmem_max
MAX_RESTARTS = 10  # worker deaths tolerated within RESTART_WINDOW; past that the parent exits
RESTART_WINDOW = 60.0


class PortInUse(OSError):
    """The address and port cannot be bound; the message says which."""


def bind_per_worker(
    host: str, port: int, count: int, kinds: Sequence[int], backlog: int
) -> list[tuple[socket.socket, ...]]:
    """``count`` groups of sockets, one of each of ``kinds`` (``SOCK_DGRAM``, ``SOCK_STREAM``),
    all on one address and port: one group per worker, so that the kernel spreads the load over
    the workers (SO_REUSEPORT) and a restarted worker takes over its own sockets."""
    opened: list[socket.socket] = []
    try:
        family = socket.getaddrinfo(host, port, type=kinds[0])[0][0]
        shared = count > 1
        if shared:
            _check_free(family, kinds, host, port)
        for _ in range(count):
            for kind in kinds:
                sock = _bound(family, kind, host, port, shared)
                opened.append(sock)
                port = sock.getsockname()[1]  # a port of 0 becomes the one the system chose
                if kind == socket.SOCK_STREAM:
                    sock.listen(backlog)
    except OSError as exc:
        for sock in opened:
            sock.close()
        raise PortInUse(f"cannot listen on {host} port {port}: {exc.strerror or exc}") from exc
    return [tuple(opened[i : i + len(kinds)]) for i in range(0, len(opened), len(kinds))]


def _check_free(family: int, kinds: Sequence[int], host: str, port: int) -> None:
    """Fail if anything listens already: with SO_REUSEPORT, a second server of the same user
    would otherwise quietly share the port with the first, each getting half of the load."""
    for kind in kinds:
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
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_BUFFER)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, not the machine's count)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class Supervisor:
    """Runs ``target(*args)`` in one process per entry of ``worker_args`` until a signal."""

    def __init__(
        self,
        target: Callable[..., Any],
        worker_args: Sequence[tuple[Any, ...]],
        name: str,
        *,
        stop_grace: float = 5.0,
        start_method: str | None = None,
    ) -> None:
        self._target = target
        self._args = worker_args
        self._name = name
        self._stop_grace = stop_grace  # seconds a worker gets to exit after SIGTERM
        # fork starts a worker in milliseconds and shares the parent's memory; spawn (the only
        # way elsewhere) starts from a fresh interpreter, and sockets survive it through
        # multiprocessing's own socket passing.
        method = start_method or ("fork" if sys.platform == "linux" else "spawn")
        self._context = multiprocessing.get_context(method)
        self._workers: list[BaseProcess] = []
        self._deaths: deque[float] = deque()
        self._stopping = False

    def run(self) -> int:
        """Supervise until SIGTERM or SIGINT (0), or until workers keep dying (1)."""
        wake_reader, wake_writer = socket.socketpair()
        wake_reader.setblocking(False)
        wake_writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(wake_writer.fileno())
        previous = {sig: signal.signal(sig, self._on_signal) for sig in STOP_SIGNALS}
        try:
            self._workers = [self._start(index) for index in range(len(self._args))]
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
        process = self._context.Process(
            target=self._target, args=self._args[index], name=f"{self._name}-{index}"
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
                worker.terminate()  # SIGTERM: the worker finishes what it does and exits
        deadline = time.monotonic() + self._stop_grace
        for worker in self._workers:
            worker.join(max(0.0, deadline - time.monotonic()))
            if worker.is_alive():
                log.warning(
                    "worker pid %s did not stop within %.0f s; killing it",
                    worker.pid,
                    self._stop_grace,
                )
                worker.kill()
                worker.join()


def stop_when_orphaned(interval: float = 1.0) -> None:
    """In a worker: SIGTERM itself (a graceful stop) once its parent is gone.

    A parent killed with SIGKILL cannot stop its workers; without this they would go on
    serving, orphaned, on a port nobody supervises any more.
    """
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        while parent.is_alive():
            time.sleep(interval)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
