"""``lanlock dns serve``: sockets, worker processes, signals.

The parent binds every socket and starts one worker process per socket pair under
:class:`lanlock.supervisor.Supervisor` (restarted when one dies, all stopped on SIGTERM or
SIGINT; a restarted worker takes over the very socket of the one that died, with the datagrams
queued in it).

Several workers share one port through ``SO_REUSEPORT``, which on Linux spreads datagrams and
connections over the sockets by the client's address and port. Other systems get one worker:
Windows has no ``SO_REUSEPORT``, and on macOS and the BSDs it does not spread the load (the last
socket bound gets the datagrams). One Python process answers from one core, so the workers are
how the server uses every core.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from dataclasses import dataclass

from lanlock import defaults
from lanlock.dns.challenges import check_schema
from lanlock.dns.worker import WorkerSettings, configure_logging, run_worker
from lanlock.dns.zone import Zone
from lanlock.supervisor import Supervisor, usable_cores

log = logging.getLogger(__name__)

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
    return requested if requested > 0 else usable_cores()


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
        worker_args = [
            (index, settings.worker, udp, tcp) for index, (udp, tcp) in enumerate(sockets)
        ]
        return Supervisor(run_worker, worker_args, "lanlock-dns-worker").run()
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
